"""WorkOS AuthKit for FastAPI: signed webhooks, durable user sync, Actions and current_user."""

from .actions import (
    ActionResponse,
    ActionVerdict,
    AuthenticationAction,
    Invitation,
    SignedActionResponse,
    UserData,
    UserRegistrationAction,
)
from .authkit import AuthKit
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
from .pipeline import Effect
from .tables import WorkOSEventRecord, WorkOSLease, WorkOSSyncState, WorkOSUser, WorkOSUserTombstone

__all__ = [
    "ActionResponse",
    "ActionVerdict",
    "AuthKit",
    "AuthKitError",
    "AuthSession",
    "AuthenticationAction",
    "ConfigurationError",
    "DatabaseUnavailableError",
    "DeletedUser",
    "Effect",
    "Event",
    "HandlerError",
    "InvalidEventError",
    "Invitation",
    "Organization",
    "OrganizationMembership",
    "SignatureError",
    "SignedActionResponse",
    "User",
    "UserData",
    "UserRegistrationAction",
    "WorkOSEventRecord",
    "WorkOSLease",
    "WorkOSSyncState",
    "WorkOSUser",
    "WorkOSUserTombstone",
    "parse_event",
]
