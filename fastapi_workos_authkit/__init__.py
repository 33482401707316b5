"""WorkOS AuthKit for FastAPI: signed webhooks, durable user sync, Actions and current_user."""

from .actions import (
    ActionResponse,
    ActionSession,
    ActionVerdict,
    AuthenticationAction,
    Invitation,
    SessionOnLoopError,
    SignedActionResponse,
    UserData,
    UserRegistrationAction,
)
from .authkit import AuthKit
from .config import AuthKitSettings
from .errors import (
    AuthKitError,
    ConfigurationError,
    DatabaseUnavailableError,
    HandlerError,
    InvalidEventError,
    SignatureError,
)
from .events import (
    AuthSession,
    DeletedUser,
    Event,
    Organization,
    OrganizationMembership,
    User,
    parse_event,
)
from .lease import LeaseLostError
from .mirror import Effect
from .providers import AuthProvider, auth_config_providers, custom_domain_providers
from .tables import (
    SessionStatus,
    WorkOSEventRecord,
    WorkOSLease,
    WorkOSOrganization,
    WorkOSOrganizationMembership,
    WorkOSSession,
    WorkOSSyncState,
    WorkOSTombstone,
    WorkOSUser,
    WorkOSUserTombstone,
)
from .tokens import AccessTokenClaims, InvalidTokenError

__all__ = [
    "AccessTokenClaims",
    "ActionResponse",
    "ActionSession",
    "ActionVerdict",
    "AuthKit",
    "AuthKitError",
    "AuthKitSettings",
    "AuthProvider",
    "AuthSession",
    "AuthenticationAction",
    "ConfigurationError",
    "DatabaseUnavailableError",
    "DeletedUser",
    "Effect",
    "Event",
    "HandlerError",
    "InvalidEventError",
    "InvalidTokenError",
    "Invitation",
    "LeaseLostError",
    "Organization",
    "OrganizationMembership",
    "SessionOnLoopError",
    "SessionStatus",
    "SignatureError",
    "SignedActionResponse",
    "User",
    "UserData",
    "UserRegistrationAction",
    "WorkOSEventRecord",
    "WorkOSLease",
    "WorkOSOrganization",
    "WorkOSOrganizationMembership",
    "WorkOSSession",
    "WorkOSSyncState",
    "WorkOSTombstone",
    "WorkOSUser",
    "WorkOSUserTombstone",
    "auth_config_providers",
    "custom_domain_providers",
    "parse_event",
]
