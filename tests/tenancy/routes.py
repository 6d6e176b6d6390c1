"""Every /v1 endpoint with the scope the seeds' rules give it: the table the matrix tests check.

Written out by hand, not read from the code, so a route that declares the
wrong scope fails the tests. A new endpoint must be added here (the
completeness test says so).
"""

from __future__ import annotations

from dataclasses import dataclass

FULL = "full-access"  # only a credential without scopes


@dataclass(frozen=True)
class Route:
    method: str
    path: (
        str  # {session} {key} {webhook} {account} {member} {service_account} {workspace} {snapshot} {job} are filled in
    )
    scope: str | None  # None: any valid credential
    action: str

    @property
    def mutating(self) -> bool:
        return self.method in ("POST", "PATCH", "PUT", "DELETE")


ROUTES = [
    Route("POST", "/v1/sessions", "sessions.write", "session.create"),
    Route("GET", "/v1/sessions", "sessions.read", "session.list"),
    Route("GET", "/v1/sessions/{session}", "sessions.read", "session.get"),
    Route("DELETE", "/v1/sessions/{session}", "sessions.write", "session.terminate"),
    Route("PATCH", "/v1/sessions/{session}", "sessions.write", "session.update"),
    Route("POST", "/v1/sessions/{session}/tokens", "sessions.write", "session.token"),
    Route("DELETE", "/v1/sessions/{session}/tokens", "sessions.write", "session.tokens_revoke"),
    Route("POST", "/v1/sessions/{session}/pause", "sessions.write", "session.pause"),
    Route("POST", "/v1/sessions/{session}/resume", "sessions.write", "session.resume"),
    Route("POST", "/v1/sessions/{session}/fork", "sessions.write", "session.fork"),
    Route("POST", "/v1/exec", "exec.write", "exec.run"),
    Route("GET", "/v1/accounts", None, "account.list"),
    Route("POST", "/v1/accounts", FULL, "account.create"),
    Route("GET", "/v1/accounts/{account}", None, "account.get"),
    Route("PATCH", "/v1/accounts/{account}", FULL, "account.update"),
    Route("DELETE", "/v1/accounts/{account}", FULL, "account.delete"),
    Route("GET", "/v1/accounts/{account}/members", FULL, "member.list"),
    Route("POST", "/v1/accounts/{account}/members", FULL, "member.add"),
    Route("PATCH", "/v1/accounts/{account}/members/{member}", FULL, "member.update"),
    Route("DELETE", "/v1/accounts/{account}/members/{member}", FULL, "member.remove"),
    Route("GET", "/v1/accounts/{account}/service-accounts", FULL, "service_account.list"),
    Route("POST", "/v1/accounts/{account}/service-accounts", FULL, "service_account.create"),
    Route("GET", "/v1/accounts/{account}/service-accounts/{service_account}", FULL, "service_account.get"),
    Route("DELETE", "/v1/accounts/{account}/service-accounts/{service_account}", FULL, "service_account.delete"),
    Route("POST", "/v1/keys", "keys.write", "key.create"),
    Route("GET", "/v1/keys", "keys.read", "key.list"),
    Route("GET", "/v1/keys/{key}", "keys.read", "key.get"),
    Route("DELETE", "/v1/keys/{key}", "keys.write", "key.revoke"),
    Route("GET", "/v1/audit", "audit.read", "audit.list"),
    Route("GET", "/v1/quotas", "billing.read", "quota.get"),
    Route("PUT", "/v1/quotas", "billing.write", "quota.set"),
    Route("PATCH", "/v1/quotas", "billing.write", "quota.update"),
    Route("POST", "/v1/webhooks", "webhooks.write", "webhook.create"),
    Route("GET", "/v1/webhooks", "webhooks.read", "webhook.list"),
    Route("GET", "/v1/webhooks/{webhook}", "webhooks.read", "webhook.get"),
    Route("PATCH", "/v1/webhooks/{webhook}", "webhooks.write", "webhook.update"),
    Route("DELETE", "/v1/webhooks/{webhook}", "webhooks.write", "webhook.delete"),
    Route("POST", "/v1/webhooks/{webhook}/ping", "webhooks.write", "webhook.ping"),
    Route("GET", "/v1/webhooks/{webhook}/deliveries", "webhooks.read", "webhook.deliveries"),
    Route("POST", "/v1/workspaces", "workspaces.write", "workspace.create"),
    Route("GET", "/v1/workspaces", "workspaces.read", "workspace.list"),
    Route("POST", "/v1/workspaces/import", "workspaces.write", "workspace.import"),
    Route("GET", "/v1/workspaces/{workspace}", "workspaces.read", "workspace.get"),
    Route("PATCH", "/v1/workspaces/{workspace}", "workspaces.write", "workspace.update"),
    Route("DELETE", "/v1/workspaces/{workspace}", "workspaces.write", "workspace.delete"),
    Route("POST", "/v1/workspaces/{workspace}/clone", "workspaces.write", "workspace.clone"),
    Route("POST", "/v1/workspaces/{workspace}/bootstrap", "workspaces.write", "workspace.bootstrap"),
    Route("POST", "/v1/workspaces/{workspace}/snapshots", "workspaces.write", "snapshot.create"),
    Route("GET", "/v1/workspaces/{workspace}/snapshots", "workspaces.read", "snapshot.list"),
    Route("GET", "/v1/workspaces/{workspace}/snapshots/{snapshot}", "workspaces.read", "snapshot.get"),
    Route("POST", "/v1/workspaces/{workspace}/snapshots/{snapshot}/restore", "workspaces.write", "snapshot.restore"),
    Route("DELETE", "/v1/workspaces/{workspace}/snapshots/{snapshot}", "workspaces.write", "snapshot.delete"),
    # Registry logins: no images.* scope exists, so the workspaces ones.
    Route("POST", "/v1/registry-credentials", "workspaces.write", "registry_credential.create"),
    Route("GET", "/v1/registry-credentials", "workspaces.read", "registry_credential.list"),
    Route("DELETE", "/v1/registry-credentials/{credential}", "workspaces.write", "registry_credential.delete"),
    Route("POST", "/v1/images", "workspaces.write", "image.pull"),
    Route("GET", "/v1/images", "workspaces.read", "image.list"),
    Route("GET", "/v1/images/{image}", "workspaces.read", "image.get"),
    Route("DELETE", "/v1/images/{image}", "workspaces.write", "image.delete"),
    # Jobs: any valid credential reaches the route; the job kind's own scope
    # is checked inside (tests/test_jobs_*.py prove those).
    Route("GET", "/v1/jobs/kinds", None, "job.kinds"),
    Route("POST", "/v1/jobs", None, "job.create"),
    Route("GET", "/v1/jobs", None, "job.list"),
    Route("GET", "/v1/jobs/{job}", None, "job.get"),
    Route("POST", "/v1/jobs/{job}/cancel", None, "job.cancel"),
    Route("POST", "/v1/jobs/{job}/retry", None, "job.retry"),
]


@dataclass(frozen=True)
class EdgeRoute:
    """A session endpoint, served by the edge router (path style; the subdomain style is the same route)."""

    method: str
    path: str  # {session} is filled in
    scope: str
    action: str | None  # its audit event's action; None: not audited
    websocket: bool = False

    def headers(self) -> dict[str, str]:
        if not self.websocket:
            return {}
        return {
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        }


EDGE_ROUTES = [
    EdgeRoute("GET", "/s/{session}/", "sessions.read", None),
    EdgeRoute("GET", "/s/{session}/pty", "sessions.read", None),
    EdgeRoute("GET", "/s/{session}/pty", "exec.write", "session.pty", websocket=True),
    EdgeRoute("GET", "/s/{session}/exec", "exec.write", "session.exec", websocket=True),
    EdgeRoute("GET", "/s/{session}/tunnel/8080", "sessions.write", "session.tunnel", websocket=True),
    EdgeRoute("GET", "/s/{session}/ports/8080/", "sessions.write", None),
    EdgeRoute("POST", "/s/{session}/ports/8080/form", "sessions.write", None),
    EdgeRoute("GET", "/s/{session}/files/etc/hostname", "files.read", None),
    EdgeRoute("PUT", "/s/{session}/files/root/pwned", "files.write", "file.upload"),
    EdgeRoute("DELETE", "/s/{session}/files/etc/hostname", "files.write", "file.delete"),
    EdgeRoute("GET", "/s/{session}/fs/stat/etc", "files.read", None),
    EdgeRoute("GET", "/s/{session}/fs/list/root", "files.read", None),
    EdgeRoute("POST", "/s/{session}/fs/mkdir/root/pwned", "files.write", "file.operation"),
    EdgeRoute("POST", "/s/{session}/fs/rename", "files.write", "file.operation"),
]
