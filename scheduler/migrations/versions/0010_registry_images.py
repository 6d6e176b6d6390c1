"""Registry images: the digest a session's image reference resolved to; hosts that pull images.

Revision ID: 0010_registry_images
Revises: 0009_job_creators
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_registry_images"
down_revision = "0009_job_creators"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("image_digest", sa.String(80), nullable=True))
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("pulls_images", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("registry_images", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("registry_images")
        batch.drop_column("pulls_images")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("image_digest")
