"""TPM attestation challenges (model/tpm.py): one pending challenge per TPM device.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Utc = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tpm_challenges",
        sa.Column("instance_id", sa.Text, nullable=False),
        sa.Column("registration_key", sa.Text, nullable=False),
        sa.Column("registration_id", sa.Text, nullable=False),
        sa.Column("challenge_id", sa.Text, nullable=False),
        sa.Column("endorsement_key", sa.Text, nullable=False),
        sa.Column("storage_root_key", sa.Text, nullable=False),
        sa.Column("challenge_key", sa.Text, nullable=False),
        sa.Column("hub_key", sa.Text, nullable=True),
        sa.Column("created_at", Utc, nullable=False),
        sa.Column("expires_at", Utc, nullable=False),
        sa.Column("used_at", Utc, nullable=True),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instances.id"],
            name="fk_tpm_challenges_instance_id_instances",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("instance_id", "registration_key", name="pk_tpm_challenges"),
    )
    op.create_index("ix_tpm_challenges_expires_at", "tpm_challenges", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_tpm_challenges_expires_at", table_name="tpm_challenges")
    op.drop_table("tpm_challenges")
