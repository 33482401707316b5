"""WorkOS AuthKit for FastAPI: signed webhooks, durable user sync, Actions and current_user."""

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
    "AuthKit",
    "AuthKitError",
    "AuthSession",
    "ConfigurationError",
    "DatabaseUnavailableError",
    "DeletedUser",
    "Effect",
    "Event",
    "HandlerError",
    "InvalidEventError",
    "Organization",
    "OrganizationMembership",
    "SignatureError",
    "User",
    "WorkOSEventRecord",
    "WorkOSLease",
    "WorkOSSyncState",
    "WorkOSUser",
    "WorkOSUserTombstone",
    "parse_event",
]
