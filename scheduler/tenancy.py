"""Wire the multi-tenant layer into the scheduler's app.

Authentication (bearer token + ``X-Chaser-Account`` → ``g.principal``) for
every ``/v1`` request, the audit trail, and the routes for accounts, keys,
audit events and webhooks.
"""

from __future__ import annotations

from quart import g, request
from quart_trio import QuartTrio

from chaser.wire import errors
from scheduler.accounts_api import register_account_routes
from scheduler.audit import install_audit
from scheduler.auth import SCOPES, Authenticator, AuthFailure
from scheduler.config import SchedulerConfig
from scheduler.jwt_tokens import JwksSource, JwtVerifier
from scheduler.keys_api import register_key_routes
from scheduler.store import Store
from scheduler.webhooks_api import register_webhook_routes

ACCOUNT_HEADER = "X-Chaser-Account"


def jwt_verifier(config: SchedulerConfig) -> JwtVerifier | None:
    if config.jwt_issuer is None or config.jwt_audience is None:
        return None
    return JwtVerifier(
        issuer=config.jwt_issuer,
        audience=config.jwt_audience,
        jwks=JwksSource(
            url=config.jwt_jwks_url,
            file=config.jwt_jwks_file,
            max_age=config.jwt_jwks_max_age,
            refetch_interval=config.jwt_jwks_refetch_interval,
        ),
        algorithms=frozenset(config.jwt_algorithms),
        leeway=config.jwt_leeway,
        email_claim=config.jwt_email_claim,
        email_trusted=config.jwt_email_trusted,
        known_scopes=SCOPES,
    )


def install_tenancy(app: QuartTrio, config: SchedulerConfig, store: Store) -> None:
    authenticator = Authenticator(store, jwt_verifier(config))

    @app.before_request
    async def _authenticate() -> None:
        if not request.path.startswith("/v1/"):
            return
        # /v1/accounts/{account}/... names the account in the path instead.
        selector = (request.view_args or {}).get("account") or request.headers.get(ACCOUNT_HEADER) or None
        try:
            g.principal = await authenticator.authenticate(request.headers.get("Authorization"), selector)
        except AuthFailure as exc:
            g.auth_failure = exc
            raise
        except (errors.NotFound, errors.Forbidden):
            g.account_denied = True
            raise

    install_audit(app, store, config.audit_failure_window)
    register_account_routes(app, store)
    register_key_routes(app, store)
    register_webhook_routes(app, store, config)
