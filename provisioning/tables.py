"""Every table of the service, gathered in one metadata for migrations and schema checks."""

from provisioning.audit import models as _audit
from provisioning.connectors import models as _connectors
from provisioning.database import Base
from provisioning.delivery import models as _delivery
from provisioning.entitlements import models as _entitlements
from provisioning.identity import models as _identity
from provisioning.offboarding import models as _offboarding
from provisioning.okta import models as _okta
from provisioning.oversight import models as _oversight
from provisioning.requests import models as _requests
from provisioning.reviews import models as _reviews
from provisioning.schedule import models as _schedule
from provisioning.tokens import models as _tokens

__all__ = ["metadata"]

metadata = Base.metadata
_ = (
    _audit,
    _connectors,
    _delivery,
    _entitlements,
    _identity,
    _offboarding,
    _okta,
    _oversight,
    _requests,
    _reviews,
    _schedule,
    _tokens,
)
