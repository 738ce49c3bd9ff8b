"""API keys: scopes, expiry, rotation, data-plane permissions (B).

Also widens ``alert_webhooks.secret``: signing secrets are stored encrypted (a Fernet token
is longer than the 256 characters a plaintext secret may have). The rows themselves are
encrypted when the server starts, since only it holds the key (never the database).

Revision ID: 0010
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("expires_at", _TS, nullable=True))
        # Existing keys keep what they could do before: every endpoint of their project.
        batch.add_column(sa.Column("scopes", sa.JSON, nullable=False, server_default="[]"))
        batch.add_column(sa.Column("permissions", sa.JSON, nullable=False, server_default="[]"))
        batch.add_column(sa.Column("customers", sa.JSON, nullable=False, server_default="[]"))
        batch.add_column(sa.Column("rotated_from", sa.String(32), nullable=True))
        batch.add_column(sa.Column("replaced_by", sa.String(32), nullable=True))
        batch.add_column(sa.Column("created_by", sa.String(128), nullable=False, server_default=""))
    with op.batch_alter_table("alert_webhooks") as batch:
        batch.alter_column("secret", type_=sa.Text, existing_type=sa.String(256))


def downgrade() -> None:
    with op.batch_alter_table("alert_webhooks") as batch:
        batch.alter_column("secret", type_=sa.String(256), existing_type=sa.Text)
    with op.batch_alter_table("api_keys") as batch:
        for column in (
            "created_by",
            "replaced_by",
            "rotated_from",
            "customers",
            "permissions",
            "scopes",
            "expires_at",
        ):
            batch.drop_column(column)
