"""GitHub (and GitHub Enterprise Server, by its API URL) through githubkit.

githubkit over PyGithub: it is async (the worker's event loop is never blocked), typed from
GitHub's own OpenAPI description (URLs and request bodies are checked before they leave), takes a
GHES base URL, and with `auto_retry=False` raises the rate limit with its reset instead of
sleeping in the worker: the task waits it out on a durable timer. Responses are read with the
small models of models.forge rather than githubkit's full ones, so a GHES release that lacks a
field of today's github.com still works.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Iterator
from typing import Any

from autonomous_pipeline.backends.forges.base import MARK, ForgeError, RateLimited, command_of
from autonomous_pipeline.models.forge import (
    CheckState,
    EventKind,
    ForgeConfig,
    MergeMethod,
    PrCheck,
    PrEvent,
    PrView,
    PullRequest,
)
from autonomous_pipeline.models.review import Finding, Severity, Verdict

# Who may steer a task from its pull request: people with write access, as GitHub says. Anybody
# can comment on a public repository; a stranger's `/approve` is not an approval.
TRUSTED = frozenset({"OWNER", "MEMBER", "COLLABORATOR"})
_PAGE = 100
WRITERS_TTL_S = 600.0
_MAX_PAGES = 30  # 3,000 comments on one PR: past that, a read would take too long to matter
_BODY_MAX = 4000


def review_mark(commit: str) -> str:
    return f"{MARK} review {commit} -->"


class GitHubForge:
    def __init__(self, config: ForgeConfig, token: str) -> None:
        from githubkit import GitHub  # 0.4 s to import: only where a run publishes PRs

        owner, _, name = config.repository.partition("/")
        if not owner or not name or "/" in name:
            raise ForgeError(f"--forge-repo {config.repository!r}: expected OWNER/NAME")
        self.owner, self.name = owner, name
        self._writers: dict[str, tuple[bool, float]] = {}  # login -> (may write, when asked)
        self.gh = GitHub(
            token,
            base_url=config.api_url.rstrip("/") + "/",
            auto_retry=False,
            http_cache=False,
            timeout=30.0,
            user_agent="autonomous-pipeline",
        )

    async def _call(self, call: Awaitable[Any]) -> Any:
        """A call's JSON, read as plain data (see the module's doc)."""
        with _translated():
            return (await call).json()

    async def can_publish(self) -> str | None:
        try:
            repo = await self._call(self.gh.rest.repos.async_get(self.owner, self.name))
        except RateLimited:
            raise
        except ForgeError as exc:
            return f"{self.owner}/{self.name}: {exc}"
        if not (repo.get("permissions") or {}).get("push"):
            return f"the token may not push to {self.owner}/{self.name}"
        return None

    async def open_pr(
        self, branch: str, target: str, title: str, body: str, not_before: str = ""
    ) -> PullRequest:
        pulls = self.gh.rest.pulls
        found = await self._find(branch, target, not_before)
        if found is not None:
            return found
        try:
            made = await self._call(
                pulls.async_create(
                    self.owner, self.name, title=title, head=branch, base=target, body=body
                )
            )
        except ForgeError as exc:
            # Opened meanwhile (a retry racing the first attempt's request): that one is it.
            if exc.status == 422 and (again := await self._find(branch, target, not_before)):
                return again
            raise
        return _pull(made)

    async def _find(self, branch: str, target: str, not_before: str) -> PullRequest | None:
        pulls = await self._pages(
            self.gh.rest.pulls.async_list,
            head=f"{self.owner}:{branch}",
            base=target,
            state="all",
        )
        # Closed without a merge before this try began: an earlier try's, which a retry of the
        # task replaces (the branch is the task's, whatever the try).
        pulls = [
            p for p in pulls
            if p.get("state") == "open" or p.get("merged_at")
            or (p.get("created_at") or "") >= not_before
        ]  # fmt: skip
        if not pulls:
            return None
        newest = max(pulls, key=lambda p: p["number"])
        # The list's shape lacks `merged` and the merge commit: read the PR itself.
        return await self._get(newest["number"])

    async def _pages(self, list_call: Any, *args: Any, **kw: Any) -> list[dict[str, Any]]:
        """Every item of a listing, page by page (GitHub gives at most 100 a page, oldest
        first: the newest comments are on the last page)."""
        items: list[dict[str, Any]] = []
        for page in range(1, _MAX_PAGES + 1):
            got = await self._call(
                list_call(self.owner, self.name, *args, per_page=_PAGE, page=page, **kw)
            )
            items += got
            if len(got) < _PAGE:
                break
        return items

    async def _can_write(self, login: str, cache: dict[str, bool]) -> bool:
        """Whether `login` may push here: GitHub's author association says only that one is a
        collaborator or member, who may have been given read access alone. Asked once per read,
        and kept for WRITERS_TTL_S between the reads of this worker (a call saved per author)."""
        known = self._writers.get(login)
        if login not in cache and known is not None and time.monotonic() - known[1] < WRITERS_TTL_S:
            cache[login] = known[0]
        if login not in cache:
            got = await self._optional(
                self._call(
                    self.gh.rest.repos.async_get_collaborator_permission_level(
                        self.owner, self.name, login
                    )
                )
            )
            cache[login] = (got or {}).get("permission") in ("admin", "maintain", "write")
            self._writers[login] = (cache[login], time.monotonic())
        return cache[login]

    async def _get(self, number: int) -> PullRequest:
        got = await self._call(self.gh.rest.pulls.async_get(self.owner, self.name, number))
        return _pull(got)

    async def post_review(self, number: int, commit: str, verdict: Verdict) -> bool:
        pulls = self.gh.rest.pulls
        mark = review_mark(commit)
        listed = await self._pages(pulls.async_list_reviews, number)
        if any(mark in (r.get("body") or "") for r in listed):
            return False
        body = review_body(verdict, mark)
        inline = [
            {"path": f.file, "line": f.line, "body": f"**{f.severity.value}**: {f.message}"}
            for f in verdict.findings
            if f.file and f.line
        ]
        wanted = "APPROVE" if verdict.approved else "REQUEST_CHANGES"
        # GitHub refuses an approval or a change request on one's own PR, and inline comments
        # on lines outside the diff: each refusal falls back to what it allows.
        tries: list[tuple[str, list[dict[str, Any]]]] = [(wanted, inline), ("COMMENT", inline)]
        if inline:
            tries.append(("COMMENT", []))
        for event, comments in tries:
            try:
                review = {"commit_id": commit, "body": body, "event": event, "comments": comments}
                await self._call(
                    pulls.async_create_review(self.owner, self.name, number, data=review)  # type: ignore[call-overload]
                )
                return True
            except ForgeError as exc:
                if exc.status != 422 or (event, comments) == tries[-1]:
                    raise
        return True  # not reached: the last try raises

    async def read(
        self, number: int, target: str, known: frozenset[str] = frozenset(), checks: bool = True
    ) -> PrView:
        pr = await self._get(number)
        writers: dict[str, bool] = {}
        events = await self._comments(number, writers) + await self._reviews(number, writers, known)
        events.sort(key=lambda e: e.at)  # in the order people said them
        if not checks:  # nobody waits for them: four calls a read saved from the rate limit
            return PrView(pr=pr, events=events)
        found, required = await self._checks(pr.head_sha), await self._required(target)
        return PrView(pr=pr, events=events, checks=found, required=required)

    async def _trusted(self, item: dict[str, Any], writers: dict[str, bool]) -> str | None:
        """The author's login if they may steer the task (write access), else None."""
        login = (item.get("user") or {}).get("login")
        if not login or item.get("author_association") not in TRUSTED:
            return None
        return login if await self._can_write(login, writers) else None

    async def _comments(self, number: int, writers: dict[str, bool]) -> list[PrEvent]:
        events = []
        for c in await self._pages(self.gh.rest.issues.async_list_comments, number):
            command = command_of(c.get("body") or "")
            if command is None or (author := await self._trusted(c, writers)) is None:
                continue
            kind, words = command
            events.append(
                PrEvent(
                    id=f"comment:{c['id']}",
                    kind=kind,
                    author=author,
                    body=words[:_BODY_MAX],
                    at=c.get("created_at") or "",
                )
            )
        return events

    async def _reviews(
        self, number: int, writers: dict[str, bool], known: frozenset[str]
    ) -> list[PrEvent]:
        events = []
        for r in await self._pages(self.gh.rest.pulls.async_list_reviews, number):
            body = r.get("body") or ""
            if MARK in body:
                continue
            state = r.get("state")
            if state == "APPROVED":
                kind = EventKind.APPROVE
            elif state == "CHANGES_REQUESTED":
                kind = EventKind.FIX
            elif (command := command_of(body)) is not None:
                kind, body = command
            else:
                continue
            if (author := await self._trusted(r, writers)) is None:
                continue
            eid = f"review:{r['id']}"
            fetch = kind is EventKind.FIX and eid not in known
            events.append(
                PrEvent(
                    id=eid,
                    kind=kind,
                    author=author,
                    body=body[:_BODY_MAX],
                    findings=await self._review_findings(number, r["id"]) if fetch else [],
                    commit=r.get("commit_id"),
                    at=r.get("submitted_at") or "",
                )
            )
        return events

    async def _review_findings(self, number: int, review: int) -> list[Finding]:
        listed = await self._pages(
            self.gh.rest.pulls.async_list_comments_for_review, number, review
        )
        return [
            Finding(
                severity=Severity.MAJOR,
                file=c.get("path"),
                line=c.get("line") or c.get("original_line"),
                message=(c.get("body") or "")[:_BODY_MAX],
            )
            for c in listed
        ]

    async def _checks(self, sha: str) -> list[PrCheck]:
        runs = await self._call(
            self.gh.rest.checks.async_list_for_ref(self.owner, self.name, sha, per_page=_PAGE)
        )
        checks = [
            PrCheck(
                name=r["name"],
                state=_run_state(r.get("status"), r.get("conclusion")),
                url=r.get("details_url") or r.get("html_url"),
            )
            for r in runs.get("check_runs", [])
        ]
        combined = await self._call(
            self.gh.rest.repos.async_get_combined_status_for_ref(
                self.owner, self.name, sha, per_page=_PAGE
            )
        )
        for s in combined.get("statuses", []):
            state = {"success": CheckState.PASSED, "pending": CheckState.PENDING}.get(
                s.get("state"), CheckState.FAILED
            )
            checks.append(PrCheck(name=s["context"], state=state, url=s.get("target_url")))
        return checks

    async def _required(self, target: str) -> list[str]:
        """The checks the target requires: its rulesets' (readable with read access) and its
        branch protection's (which needs admin: a 403 or 404 there is no answer). None named:
        every check reported on the head counts."""
        names: list[str] = []
        rules = await self._optional(self._pages(self.gh.rest.repos.async_get_branch_rules, target))
        for rule in rules or []:
            if rule.get("type") == "required_status_checks":
                checks = (rule.get("parameters") or {}).get("required_status_checks") or []
                names += [c["context"] for c in checks if c.get("context")]
        protection = await self._optional(
            self._call(
                self.gh.rest.repos.async_get_status_checks_protection(self.owner, self.name, target)
            )
        )
        if protection:
            names += list(protection.get("contexts") or [])
            names += [c["context"] for c in protection.get("checks") or [] if c.get("context")]
        return list(dict.fromkeys(names))

    async def _optional(self, call: Awaitable[Any]) -> Any:
        """A read the token may not be allowed, or that has nothing: None then."""
        try:
            return await call
        except RateLimited:
            raise
        except ForgeError as exc:
            if exc.status in (403, 404):
                return None
            raise

    async def merge(
        self, number: int, head_sha: str, method: MergeMethod, title: str, message: str
    ) -> PullRequest:
        pr = await self._get(number)
        if pr.merged or not pr.open:
            return pr  # merged already (by an earlier attempt, or a person), or closed
        try:
            await self._call(
                self.gh.rest.pulls.async_merge(
                    self.owner,
                    self.name,
                    number,
                    commit_title=title,
                    commit_message=message,
                    sha=head_sha,
                    merge_method=method.value,
                )
            )
        except ForgeError as exc:
            # 405: not mergeable (a conflict, branch protection); 409: the head moved. The PR
            # as it is says which; the caller decides.
            if exc.status not in (405, 409, 422):
                raise
            pr = await self._get(number)
            if not pr.merged:
                raise
        return await self._get(number)

    async def close(self, number: int, why: str) -> bool:
        pr = await self._get(number)
        if not pr.open:
            return False
        mark = f"{MARK} closed -->"
        said = await self._pages(self.gh.rest.issues.async_list_comments, number)
        if not any(mark in (c.get("body") or "") for c in said):  # said once, whatever retries
            await self._call(
                self.gh.rest.issues.async_create_comment(
                    self.owner, self.name, number, body=f"{why}\n\n{mark}"
                )
            )
        await self._call(
            self.gh.rest.pulls.async_update(self.owner, self.name, number, state="closed")
        )
        return True

    async def withdraw(self, number: int, handed_to: str) -> bool:
        pr = await self._get(number)
        if not pr.open:
            return False
        query = _DEQUEUE if handed_to == "merge queue" else _DISABLE
        return await self._mutate(query, {"id": pr.node_id}) is None

    async def hand_over(
        self, pr: PullRequest, method: MergeMethod, title: str, message: str
    ) -> str | None:
        """Auto-merge where the protection allows it later; the merge queue where only the
        queue may merge. Both through GraphQL, the only API GitHub gives them."""
        auto = {"id": pr.node_id, "method": method.value.upper(), "head": pr.head_sha,
                "title": title, "body": message}  # fmt: skip
        why = await self._mutate(_AUTO_MERGE, auto)
        if why is None:
            return "auto-merge"
        if "queue" not in why.lower():
            raise ForgeError(f"GitHub refused auto-merge: {why}", 422)
        why = await self._mutate(_ENQUEUE, {"id": pr.node_id, "head": pr.head_sha})
        if why is not None:
            raise ForgeError(f"GitHub refused the merge queue: {why}", 422)
        return "merge queue"

    async def _mutate(self, query: str, variables: dict[str, Any]) -> str | None:
        """None once done; else GitHub's reasons."""
        from githubkit.exception import GraphQLFailed

        try:
            with _translated():
                await self.gh.async_graphql(query, variables)
        except GraphQLFailed as exc:
            errors = exc.response.errors or []
            return "; ".join(e.message for e in errors) or "no reason given"
        return None


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """githubkit's failures as the Forge's: the host's refusals as ForgeError (with its
    status), its rate limit as RateLimited (with its reset)."""
    from githubkit.exception import RateLimitExceeded, RequestError, RequestFailed

    try:
        yield
    except RateLimitExceeded as exc:
        raise RateLimited(
            f"GitHub rate limit: {_message(exc.response)}", exc.retry_after.total_seconds()
        ) from None
    except RequestFailed as exc:
        status = exc.response.status_code
        raise ForgeError(f"GitHub said {status}: {_message(exc.response)}", status) from None
    except RequestError as exc:
        raise ForgeError(f"GitHub could not be reached: {exc}") from None


_AUTO_MERGE = """
mutation($id: ID!, $method: PullRequestMergeMethod!, $head: GitObjectID!, $title: String!,
         $body: String!) {
  enablePullRequestAutoMerge(input: {pullRequestId: $id, mergeMethod: $method,
      expectedHeadOid: $head, commitHeadline: $title, commitBody: $body}) {
    clientMutationId
  }
}"""
_DISABLE = """
mutation($id: ID!) {
  disablePullRequestAutoMerge(input: {pullRequestId: $id}) { clientMutationId }
}"""
_DEQUEUE = """
mutation($id: ID!) {
  dequeuePullRequest(input: {id: $id}) { clientMutationId }
}"""
_ENQUEUE = """
mutation($id: ID!, $head: GitObjectID!) {
  enqueuePullRequest(input: {pullRequestId: $id, expectedHeadOid: $head}) {
    mergeQueueEntry { position }
  }
}"""


def _pull(data: dict[str, Any]) -> PullRequest:
    head = data.get("head") or {}
    closed_by = None
    if data.get("state") == "closed" and not data.get("merged"):
        closed_by = (data.get("closed_by") or {}).get("login")
    return PullRequest(
        number=data["number"],
        url=data.get("html_url") or "",
        head_branch=head.get("ref", ""),
        head_sha=head.get("sha", ""),
        open=data.get("state") == "open",
        merged=bool(data.get("merged")),
        merge_commit=data.get("merge_commit_sha") if data.get("merged") else None,
        mergeable=data.get("mergeable"),
        closed_by=closed_by,
        node_id=data.get("node_id") or "",
    )


def _run_state(status: str | None, conclusion: str | None) -> CheckState:
    if status != "completed":
        return CheckState.PENDING
    if conclusion in ("success", "neutral", "skipped"):
        return CheckState.PASSED
    return CheckState.FAILED


def _message(response: Any) -> str:
    try:
        data = response.json()
    except Exception:
        return (response.text or "")[:300]
    text = str(data.get("message", "")) if isinstance(data, dict) else ""
    errors = data.get("errors") if isinstance(data, dict) else None
    if errors:
        text += " " + "; ".join(
            str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors
        )
    return text[:300]


def review_body(verdict: Verdict, mark: str) -> str:
    head = (
        "**Approved** by the pipeline's reviewer."
        if verdict.approved
        else ("**Changes requested** by the pipeline's reviewer: a fix round follows.")
    )
    lines = [head]
    if verdict.summary:
        lines += ["", verdict.summary]
    for f in verdict.findings:
        where = f"`{f.file}{f':{f.line}' if f.line else ''}`: " if f.file else ""
        lines.append(f"- [{f.severity.value}] {where}{f.message}")
    lines += ["", mark]
    return "\n".join(lines)
