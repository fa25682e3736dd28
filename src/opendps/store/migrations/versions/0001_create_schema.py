"""Create the OpenDPS schema.

Revision ID: 0001
Revises:
Create Date: 2025-11-24

Written by hand to match store/tables.py; every constraint and index is named explicitly (the
names tables.py's naming convention produces) so later batch-mode revisions can address them
on SQLite. Timestamps are UTC; JSON columns hold `{"v": 1, ...}` documents (store/codec.py).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.schema import SchemaItem

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Json = sa.JSON(none_as_null=True)
Utc = sa.DateTime(timezone=True)


def _instance_id(table: str) -> list[SchemaItem]:
    return [
        sa.Column("instance_id", sa.Text, nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instances.id"],
            name=f"fk_{table}_instance_id_instances",
            ondelete="CASCADE",
        ),
    ]


def _etag_and_times(*, required: bool = False) -> list[SchemaItem]:
    return [
        sa.Column("etag", sa.Text, nullable=False),
        sa.Column("created_at", Utc, nullable=not required),
        sa.Column("updated_at", Utc, nullable=not required),
    ]


def _enrollment_spec() -> list[SchemaItem]:
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


def upgrade() -> None:
    op.create_table(
        "instances",
        sa.Column("id", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("name_key", sa.Text, nullable=False),
        sa.Column("id_scope", sa.Text, nullable=False),
        sa.Column("service_host_name", sa.Text, nullable=False),
        sa.Column("service_host_key", sa.Text, nullable=False),
        sa.Column("allocation_policy", sa.Text, nullable=False),
        sa.Column("custom_allocation", Json, nullable=True),
        *_etag_and_times(required=True),
        sa.PrimaryKeyConstraint("id", name="pk_instances"),
        sa.UniqueConstraint("name_key", name="uq_instances_name_key"),
        sa.UniqueConstraint("id_scope", name="uq_instances_id_scope"),
    )
    op.create_index("ix_instances_service_host_key", "instances", ["service_host_key"])

    op.create_table(
        "access_policies",
        *_instance_id("access_policies"),
        sa.Column("name_key", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("primary_key", sa.Text, nullable=False),
        sa.Column("secondary_key", sa.Text, nullable=False),
        sa.Column("rights", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("instance_id", "name_key", name="pk_access_policies"),
    )
    op.create_index("ix_access_policies_name_key", "access_policies", ["name_key"])

    op.create_table(
        "linked_hubs",
        *_instance_id("linked_hubs"),
        sa.Column("host_key", sa.Text, nullable=False),
        sa.Column("host_name", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("allocation_weight", sa.Integer, nullable=False),
        sa.Column("apply_allocation_policy", sa.Boolean, nullable=False),
        sa.Column("location", sa.Text, nullable=True),
        sa.Column("connection", Json, nullable=False),
        *_etag_and_times(),
        sa.PrimaryKeyConstraint("instance_id", "host_key", name="pk_linked_hubs"),
    )

    op.create_table(
        "individual_enrollments",
        *_instance_id("individual_enrollments"),
        sa.Column("registration_key", sa.Text, nullable=False),
        sa.Column("registration_id", sa.Text, nullable=False),
        sa.Column("device_id", sa.Text, nullable=True),
        *_enrollment_spec(),
        sa.Column("optional_device_information", Json, nullable=True),
        *_etag_and_times(),
        sa.PrimaryKeyConstraint(
            "instance_id", "registration_key", name="pk_individual_enrollments"
        ),
    )

    op.create_table(
        "enrollment_groups",
        *_instance_id("enrollment_groups"),
        sa.Column("group_key", sa.Text, nullable=False),
        sa.Column("enrollment_group_id", sa.Text, nullable=False),
        *_enrollment_spec(),
        *_etag_and_times(),
        sa.PrimaryKeyConstraint("instance_id", "group_key", name="pk_enrollment_groups"),
    )

    op.create_table(
        "registration_states",
        *_instance_id("registration_states"),
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
        sa.PrimaryKeyConstraint("instance_id", "registration_key", name="pk_registration_states"),
    )
    op.create_index(
        "ix_registration_states_group",
        "registration_states",
        ["instance_id", "enrollment_group_key", "registration_key"],
    )

    op.create_table(
        "operations",
        *_instance_id("operations"),
        sa.Column("operation_id", sa.Text, nullable=False),
        sa.Column("registration_id", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("error_code", sa.Integer, nullable=True),
        sa.Column("error_message", sa.Text, nullable=True),
        sa.Column("created_at", Utc, nullable=False),
        sa.Column("updated_at", Utc, nullable=False),
        sa.PrimaryKeyConstraint("instance_id", "operation_id", name="pk_operations"),
    )
    op.create_index("ix_operations_updated_at", "operations", ["updated_at"])

    op.create_table(
        "ca_certificates",
        *_instance_id("ca_certificates"),
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
        sa.PrimaryKeyConstraint("instance_id", "name_key", name="pk_ca_certificates"),
    )

    op.create_table(
        "hub_devices",
        sa.Column("hub_key", sa.Text, nullable=False),
        sa.Column("device_key", sa.Text, nullable=False),
        sa.Column("hub_host_name", sa.Text, nullable=False),
        sa.Column("device_id", sa.Text, nullable=False),
        *_instance_id("hub_devices"),
        sa.Column("auth_kind", sa.Text, nullable=False),
        sa.Column("auth", Json, nullable=False),
        sa.Column("iot_edge", sa.Boolean, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("twin", Json, nullable=False),
        sa.Column("desired_version", sa.Integer, nullable=False),
        sa.Column("reported_version", sa.Integer, nullable=False),
        *_etag_and_times(),
        sa.PrimaryKeyConstraint("hub_key", "device_key", name="pk_hub_devices"),
    )
    op.create_index("ix_hub_devices_instance_id", "hub_devices", ["instance_id"])

    op.create_table(
        "audit_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", Utc, nullable=False),
        sa.Column("instance_id", sa.Text, nullable=True),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_instance_id", "audit_log", ["instance_id", "id"])

    op.create_table(
        "meters",
        *_instance_id("meters"),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("instance_id", "day", "kind", name="pk_meters"),
    )


def downgrade() -> None:
    for table in (
        "meters",
        "audit_log",
        "hub_devices",
        "ca_certificates",
        "operations",
        "registration_states",
        "enrollment_groups",
        "individual_enrollments",
        "linked_hubs",
        "access_policies",
        "instances",
    ):
        op.drop_table(table)
