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
    ScimPolicy,
    ScimProvider,
    ServiceProviderConfig,
    Sort,
)
from scim2_models import User as CoreUser

from provisioning import text

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
MAX_RESULTS = 1000
DEFAULT_PAGE_SIZE = 100
CURSOR_TIMEOUT = 3600  # seconds a paging cursor stays valid
BULK_MAX_OPERATIONS = 1000
# The default body limit of the service (PROVISIONING_MAX_REQUEST_BYTES); the app
# announces its own limit, so that maxPayloadSize is the limit it enforces.
BULK_MAX_PAYLOAD_SIZE = 1_048_576


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


def service_provider_config(
    max_payload_size: int = BULK_MAX_PAYLOAD_SIZE,
) -> ServiceProviderConfig:
    """What the service supports, and nothing more.

    ``max_payload_size`` is the largest request body the service reads, in bytes:
    a larger bulk request is refused with 413 (RFC 7644 section 3.7.4).
    """
    return ServiceProviderConfig(
        patch=Patch(supported=True),
        bulk=Bulk(
            supported=True,
            max_operations=BULK_MAX_OPERATIONS,
            max_payload_size=max_payload_size,
        ),
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


def comparison_key(binding: Any, value: str) -> str:
    """The service's comparison key (scim2-models' ``ScimPolicy.comparison_key``):
    :func:`provisioning.text.fold` unless the attribute is caseExact, whose values
    compare as they are. The SQL filters (``scim.filters``) compare the keys stored in
    the key columns; scim2-server's PATCH path filters and uniqueness checks compare
    through this policy, so both agree."""
    return value if binding.case_exact else text.fold(value)


POLICY = ScimPolicy(comparison_key=comparison_key)


def provider(max_payload_size: int = BULK_MAX_PAYLOAD_SIZE) -> ScimProvider:
    """The description of the service: its models, resource types and configuration."""
    return ScimProvider(
        models=[User, EnterpriseUser, Group],
        resource_types=[
            ResourceType.from_resource(UserResource),
            ResourceType.from_resource(Group),
        ],
        config=service_provider_config(max_payload_size),
        policy=POLICY,
    )
