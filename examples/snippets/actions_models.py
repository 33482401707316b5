"""The app's own table read by the Actions guide's registration handler (docs/actions.md)."""

from sqlmodel import Field, SQLModel


# --8<-- [start:table]
class RegisteredDomain(SQLModel, table=True):
    """Email domains of registered organizations: the app's own table, not a workos_* one."""

    __tablename__ = "registered_domains"

    domain: str = Field(primary_key=True)


# --8<-- [end:table]
