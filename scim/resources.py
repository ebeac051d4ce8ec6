"""The SCIM resources served (User with the enterprise extension, Group) and what is announced."""

from __future__ import annotations

from typing import Annotated, Any

from scim2_models import (
    URN,
    AuthenticationScheme,
    Bulk,
    ChangePassword,
    EnterpriseUser,
    Entitlement,
    ETag,
    External,
    Filter,
    Group,
    Mutability,
    Pagination,
    Patch,
    Reference,
    ResourceType,
    ScimProvider,
    ServiceProviderConfig,
    Sort,
)
from scim2_models import User as CoreUser

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
MAX_RESULTS = 1000
DEFAULT_PAGE_SIZE = 100
CURSOR_TIMEOUT = 3600  # seconds a paging cursor stays valid


class User(CoreUser[Any]):
    """The core User; ``entitlements`` are the user's live connector grants, read-only."""

    __schema__ = URN("urn:ietf:params:scim:schemas:core:2.0:User")

    entitlements: Annotated[list[Entitlement] | None, Mutability.read_only] = None


UserResource = User[EnterpriseUser]


BEARER = AuthenticationScheme(
    type=AuthenticationScheme.Type.oauthbearertoken,
    name="OAuth Bearer Token",
    description="A token from `provisioning token create --scope scim:provision`",
    spec_uri=Reference[External]("https://www.rfc-editor.org/rfc/rfc6750"),
    primary=True,
)


def service_provider_config() -> ServiceProviderConfig:
    """What the service supports, and nothing more."""
    return ServiceProviderConfig(
        patch=Patch(supported=True),
        bulk=Bulk(supported=False, max_operations=0, max_payload_size=0),
        filter=Filter(supported=True, max_results=MAX_RESULTS),
        change_password=ChangePassword(supported=False),
        sort=Sort(supported=True),
        etag=ETag(supported=True),
        pagination=Pagination(
            index=True,
            cursor=True,
            cursor_timeout=CURSOR_TIMEOUT,
            default_pagination_method=Pagination.DefaultPaginationMethod.index,
            default_page_size=DEFAULT_PAGE_SIZE,
            max_page_size=MAX_RESULTS,
        ),
        authentication_schemes=[BEARER],
    )


def provider() -> ScimProvider:
    """The description of the service: its models, resource types and configuration."""
    return ScimProvider(
        models=[User, EnterpriseUser, Group],
        resource_types=[
            ResourceType.from_resource(UserResource),
            ResourceType.from_resource(Group),
        ],
        config=service_provider_config(),
    )
