"""The database schema: SQLAlchemy Core tables, the single source for both backends.

Conventions (docs/database.md explains each):
- Every table that belongs to an instance has `instance_id` as the first column of its primary
  key and a foreign key to `instances.id` with ON DELETE CASCADE, so deleting an instance
  removes everything it owns and every per-instance lookup is an index range scan.
- Identifiers that are case-insensitive but case-preserving (registration IDs, group IDs,
  names, host names; protocol.md §1.4) have a `*_key` column holding `registration_key()`
  of the value; lookups, uniqueness and keyset paging use the key, records keep the spelling.
- Nested parts of a record live in JSON columns; each holds an object `{"v": 1, ...}` written
  and read only by `store/codec.py`.
- Timestamps are stored in UTC (`DateTime(timezone=True)`; SQLite keeps them as naive UTC text).

Changing anything here needs an alembic revision in `store/migrations/versions/` in the same
commit; `python -m opendps.store.migrate check` fails until they agree.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

# Named constraints let alembic's batch mode (SQLite table rebuilds) address them later.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

# `NULL` in SQL means "absent" (a Python None), never the JSON literal `null`.
Json = sa.JSON(none_as_null=True)
Utc = sa.DateTime(timezone=True)
# SQLite only auto-increments an `INTEGER PRIMARY KEY`; PostgreSQL gets a 64-bit identity.
AutoId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _instance_fk() -> sa.Column[str]:
    return sa.Column(
        "instance_id",
        sa.Text,
        sa.ForeignKey("instances.id", ondelete="CASCADE"),
        nullable=False,
    )


def _etag_and_times(*, required: bool = False) -> list[sa.Column[Any]]:
    return [
        sa.Column("etag", sa.Text, nullable=False),
        sa.Column("created_at", Utc, nullable=not required),
        sa.Column("updated_at", Utc, nullable=not required),
    ]


def _enrollment_spec() -> list[sa.Column[Any]]:
    """Columns of `EnrollmentSpec`, shared by individual enrollments and enrollment groups."""
    return [
        sa.Column("attestation_type", sa.Text, nullable=False),
        sa.Column("attestation", Json, nullable=False),
        sa.Column("provisioning_status", sa.Text, nullable=False),
        sa.Column("iot_hubs", Json, nullable=True),
        sa.Column("iot_hub_host_name", sa.Text, nullable=True),
        sa.Column("allocation_policy", sa.Text, nullable=True),
        sa.Column("custom_allocation", Json, nullable=True),
        sa.Column("reprovision_policy", Json, nullable=False),
        sa.Column("initial_twin", Json, nullable=True),
        sa.Column("iot_edge", sa.Boolean, nullable=False),
    ]


instances = sa.Table(
    "instances",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("name_key", sa.Text, nullable=False, unique=True),
    sa.Column("id_scope", sa.Text, nullable=False, unique=True),
    sa.Column("service_host_name", sa.Text, nullable=False),
    # Not unique: several instances may answer on the deployment's shared host name.
    sa.Column("service_host_key", sa.Text, nullable=False, index=True),
    sa.Column("allocation_policy", sa.Text, nullable=False),
    sa.Column("custom_allocation", Json, nullable=True),
    *_etag_and_times(required=True),
)

access_policies = sa.Table(
    "access_policies",
    metadata,
    _instance_fk(),
    sa.Column("name_key", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("primary_key", sa.Text, nullable=False),
    sa.Column("secondary_key", sa.Text, nullable=False),
    # Comma-separated wire names ("EnrollmentRead,EnrollmentWrite"): stable across reorderings
    # of the `Right` flag enum, whose integer values are not.
    sa.Column("rights", sa.Text, nullable=False),
    sa.PrimaryKeyConstraint("instance_id", "name_key"),
    # A service SAS token names its policy, not its instance (`list_access_policies_named`).
    sa.Index("ix_access_policies_name_key", "name_key"),
)

linked_hubs = sa.Table(
    "linked_hubs",
    metadata,
    _instance_fk(),
    sa.Column("host_key", sa.Text, nullable=False),
    sa.Column("host_name", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("allocation_weight", sa.Integer, nullable=False),
    sa.Column("apply_allocation_policy", sa.Boolean, nullable=False),
    sa.Column("location", sa.Text, nullable=True),
    # Connector settings including credentials.
    sa.Column("connection", Json, nullable=False),
    *_etag_and_times(),
    sa.PrimaryKeyConstraint("instance_id", "host_key"),
)

individual_enrollments = sa.Table(
    "individual_enrollments",
    metadata,
    _instance_fk(),
    sa.Column("registration_key", sa.Text, nullable=False),
    sa.Column("registration_id", sa.Text, nullable=False),
    sa.Column("device_id", sa.Text, nullable=True),
    *_enrollment_spec(),
    sa.Column("optional_device_information", Json, nullable=True),
    *_etag_and_times(),
    # Lookup by registration ID, keyset paging and per-instance counting all use this.
    sa.PrimaryKeyConstraint("instance_id", "registration_key"),
)

enrollment_groups = sa.Table(
    "enrollment_groups",
    metadata,
    _instance_fk(),
    sa.Column("group_key", sa.Text, nullable=False),
    sa.Column("enrollment_group_id", sa.Text, nullable=False),
    *_enrollment_spec(),
    *_etag_and_times(),
    sa.PrimaryKeyConstraint("instance_id", "group_key"),
)

registration_states = sa.Table(
    "registration_states",
    metadata,
    _instance_fk(),
    sa.Column("registration_key", sa.Text, nullable=False),
    sa.Column("registration_id", sa.Text, nullable=False),
    sa.Column("attestation_type", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("substatus", sa.Text, nullable=True),
    sa.Column("enrollment_group_id", sa.Text, nullable=True),
    sa.Column("enrollment_group_key", sa.Text, nullable=True),
    sa.Column("assigned_hub", sa.Text, nullable=True),
    sa.Column("device_id", sa.Text, nullable=True),
    sa.Column("error_code", sa.Integer, nullable=True),
    sa.Column("error_message", sa.Text, nullable=True),
    sa.Column("payload", Json, nullable=True),
    sa.Column("previous_hubs", Json, nullable=True),
    *_etag_and_times(),
    sa.PrimaryKeyConstraint("instance_id", "registration_key"),
    # `POST /registrations/{groupId}/query` pages one group's devices by registration key.
    sa.Index(
        "ix_registration_states_group",
        "instance_id",
        "enrollment_group_key",
        "registration_key",
    ),
)

operations = sa.Table(
    "operations",
    metadata,
    _instance_fk(),
    sa.Column("operation_id", sa.Text, nullable=False),
    sa.Column("registration_id", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("error_code", sa.Integer, nullable=True),
    sa.Column("error_message", sa.Text, nullable=True),
    sa.Column("created_at", Utc, nullable=False),
    sa.Column("updated_at", Utc, nullable=False),
    sa.PrimaryKeyConstraint("instance_id", "operation_id"),
    # One row per registration attempt: pruning by age (`delete_operations_before`) needs this.
    sa.Index("ix_operations_updated_at", "updated_at"),
)

ca_certificates = sa.Table(
    "ca_certificates",
    metadata,
    _instance_fk(),
    sa.Column("name_key", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("certificate_pem", sa.Text, nullable=False),
    sa.Column("subject", sa.Text, nullable=False),
    sa.Column("sha1_thumbprint", sa.Text, nullable=False),
    sa.Column("sha256_thumbprint", sa.Text, nullable=False),
    sa.Column("not_before_utc", Utc, nullable=False),
    sa.Column("not_after_utc", Utc, nullable=False),
    sa.Column("is_verified", sa.Boolean, nullable=False),
    sa.Column("verification_code", sa.Text, nullable=True),
    *_etag_and_times(),
    sa.PrimaryKeyConstraint("instance_id", "name_key"),
)

hub_devices = sa.Table(
    "hub_devices",
    metadata,
    sa.Column("hub_key", sa.Text, nullable=False),
    sa.Column("device_key", sa.Text, nullable=False),
    sa.Column("hub_host_name", sa.Text, nullable=False),
    sa.Column("device_id", sa.Text, nullable=False),
    _instance_fk(),
    sa.Column("auth_kind", sa.Text, nullable=False),
    # Keys or thumbprints.
    sa.Column("auth", Json, nullable=False),
    sa.Column("iot_edge", sa.Boolean, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    # Tags, desired and reported properties in one document.
    sa.Column("twin", Json, nullable=False),
    sa.Column("desired_version", sa.Integer, nullable=False),
    sa.Column("reported_version", sa.Integer, nullable=False),
    *_etag_and_times(),
    sa.PrimaryKeyConstraint("hub_key", "device_key"),
    # Lets ON DELETE CASCADE from `instances` find the rows without a full scan.
    sa.Index("ix_hub_devices_instance_id", "instance_id"),
)

# At most one per device (a new challenge replaces the old); model/tpm.py says why it is stored.
tpm_challenges = sa.Table(
    "tpm_challenges",
    metadata,
    _instance_fk(),
    sa.Column("registration_key", sa.Text, nullable=False),
    sa.Column("registration_id", sa.Text, nullable=False),
    sa.Column("challenge_id", sa.Text, nullable=False),
    # Base64: the public keys as the device sent them, the secret HMAC key and the hub key.
    sa.Column("endorsement_key", sa.Text, nullable=False),
    sa.Column("storage_root_key", sa.Text, nullable=False),
    sa.Column("challenge_key", sa.Text, nullable=False),
    sa.Column("hub_key", sa.Text, nullable=True),
    sa.Column("created_at", Utc, nullable=False),
    sa.Column("expires_at", Utc, nullable=False),
    sa.Column("used_at", Utc, nullable=True),
    sa.PrimaryKeyConstraint("instance_id", "registration_key"),
    # Pruning expired challenges scans by expiry.
    sa.Index("ix_tpm_challenges_expires_at", "expires_at"),
)

# Deliberately no foreign key: an audit trail must outlive the instance it records (the entry
# "instance.delete" is written after the instance is gone).
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", AutoId, primary_key=True, autoincrement=True),
    sa.Column("at", Utc, nullable=False),
    sa.Column("instance_id", sa.Text, nullable=True),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Index("ix_audit_log_instance_id", "instance_id", "id"),
)

meters = sa.Table(
    "meters",
    metadata,
    _instance_fk(),
    sa.Column("day", sa.Date, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint("instance_id", "day", "kind"),
)
