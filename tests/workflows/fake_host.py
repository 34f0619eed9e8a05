"""A scripted code host for the workflow tests: the --publish pr activities under their real
names, pull requests kept in memory, people's events appearing at a given read."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from temporalio import activity
from temporalio.exceptions import ApplicationError

from autonomous_pipeline.activities.forge import digest
from autonomous_pipeline.models.activity_refs import (
    CLOSE_PR,
    MERGE_PR,
    OPEN_PR,
    POST_PR_REVIEW,
    PUSH_BRANCH,
    READ_PR,
    WITHDRAW_PR,
)
from autonomous_pipeline.models.forge import (
    BRANCH_MOVED,
    NOTHING_NEW,
    RATE_LIMITED,
    ClosePrIn,
    ClosePrOut,
    MergePrIn,
    MergePrOut,
    OpenPrIn,
    PrCheck,
    PrEvent,
    PrView,
    PullRequest,
    PushBranchIn,
    PushBranchOut,
    ReadPrIn,
    ReviewPostIn,
    ReviewPostOut,
    WithdrawIn,
    WithdrawOut,
)


@dataclass
class HostScript:
    # task -> (the read from which it shows, the event)
    events: dict[str, list[tuple[int, PrEvent]]] = field(default_factory=dict)
    closed_at: dict[str, int] = field(default_factory=dict)  # task -> read at which it closes
    merged_by_person_at: dict[str, int] = field(default_factory=dict)
    # task -> checks of its head, by push (0: the first push); a push beyond the list: none
    checks: dict[str, list[list[PrCheck]]] = field(default_factory=dict)
    required: list[str] = field(default_factory=list)
    rate_limited: dict[str, int] = field(default_factory=dict)  # activity -> calls refused
    conflict_once: set[str] = field(default_factory=set)  # the first merge finds a conflict
    open_fails_once: set[str] = field(default_factory=set)  # a crash after the PR was made
    protected: set[str] = field(default_factory=set)  # merges handed to the host's auto-merge
    pushed_by_someone_at: dict[str, int] = field(default_factory=dict)  # task -> read
    refused_once: set[str] = field(default_factory=set)  # the first merge: not now, no hand-over
    # Someone pushes to the branch while the task's fix round runs (before its push).
    pushed_during_fix: set[str] = field(default_factory=set)


class FakeHost:
    def __init__(self, script: HostScript) -> None:
        self.script = script
        self.prs: dict[str, PullRequest] = {}  # task -> its PR
        self.pushes: dict[str, list[str]] = defaultdict(list)  # task -> commits pushed
        self.reads: dict[str, int] = defaultdict(int)
        self.reviews: list[tuple[str, str, bool]] = []  # (task, commit, approved)
        self.merges: list[MergePrIn] = []
        self.opened: list[str] = []  # tasks whose PR was created (not found)
        self.calls: dict[str, int] = defaultdict(int)
        self.log: list[tuple[str, str]] = []  # ("opened" | "merged", task) in order
        self.closed: list[tuple[str, str]] = []  # (task, why) the pipeline closed
        self.withdrawn: list[tuple[str, str]] = []  # (task, from what)
        self.shown_at: dict[str, str] = {}  # event id -> when it first showed (the host's clock)

    def _limit(self, name: str) -> None:
        self.calls[name] += 1
        if self.calls[name] <= self.script.rate_limited.get(name, 0):
            raise ApplicationError("rate limit", 120.0, type=RATE_LIMITED, non_retryable=True)

    def _task(self, number: int) -> str:
        (task,) = [t for t, pr in self.prs.items() if pr.number == number]
        return task

    @activity.defn(name=PUSH_BRANCH.name)
    async def push_branch(self, inp: PushBranchIn) -> PushBranchOut:
        pr = self.prs.get(inp.task_id)
        if (
            inp.expected is not None
            and pr is not None
            and inp.task_id in self.script.pushed_during_fix
        ):
            pr.head_sha = f"someone-{inp.task_id}"
        if inp.expected is not None and pr is not None and pr.head_sha != inp.expected:
            raise ApplicationError("moved", type=BRANCH_MOVED, non_retryable=True)
        self.pushes[inp.task_id].append(inp.commit)
        if inp.task_id in self.prs:
            self.prs[inp.task_id].head_sha = inp.commit
        return PushBranchOut(branch=f"pr/{inp.task_id}", commit=inp.commit)

    @activity.defn(name=OPEN_PR.name)
    async def open_pr(self, inp: OpenPrIn) -> PullRequest:
        self._limit(OPEN_PR.name)
        task = inp.branch.removeprefix("pr/")
        if task not in self.prs:
            number = len(self.prs) + 1
            self.prs[task] = PullRequest(
                number=number, url=f"https://host/pr/{number}", head_branch=inp.branch,
                head_sha=self.pushes[task][-1], open=True,
            )  # fmt: skip
            self.opened.append(task)
            self.log.append(("opened", task))
            if task in self.script.open_fails_once:
                self.script.open_fails_once.discard(task)
                raise RuntimeError("the worker died after the host made the PR")
        return self.prs[task]

    @activity.defn(name=POST_PR_REVIEW.name)
    async def post_review(self, inp: ReviewPostIn) -> ReviewPostOut:
        task = self._task(inp.number)
        if any(t == task and c == inp.commit for t, c, _ in self.reviews):
            return ReviewPostOut(posted=False)
        self.reviews.append((task, inp.commit, inp.verdict.approved))
        return ReviewPostOut(posted=True)

    @activity.defn(name=READ_PR.name)
    async def read_pr(self, inp: ReadPrIn) -> PrView:
        self._limit(READ_PR.name)
        task = self._task(inp.number)
        self.reads[task] += 1
        n, pr, s = self.reads[task], self.prs[task], self.script
        if s.closed_at.get(task, 0) and n >= s.closed_at[task]:
            pr.open, pr.closed_by = False, "bob"
        if s.merged_by_person_at.get(task, 0) and n >= s.merged_by_person_at[task] and pr.open:
            pr.open, pr.merged, pr.merge_commit = False, True, f"person-merge-{task}"
        if s.pushed_by_someone_at.get(task, 0) and n == s.pushed_by_someone_at[task]:
            pr.head_sha = f"someone-{task}"
        now = activity.info().current_attempt_scheduled_time.strftime("%Y-%m-%dT%H:%M:%SZ")
        events = []
        for k, e in s.events.get(task, []):
            if n >= k:
                at = self.shown_at.setdefault(e.id, e.at or now)
                events.append(e.model_copy(update={"at": at}))
        by_push = s.checks.get(task, [])
        pushed = len(self.pushes[task]) - 1
        checks = by_push[pushed] if pushed < len(by_push) else []
        view = PrView(pr=pr, events=events, checks=checks, required=s.required)
        view.digest = digest(view)
        if inp.unchanged_since == view.digest:  # as the real step: the server asks again later
            raise ApplicationError("nothing new", type=NOTHING_NEW)
        return view

    @activity.defn(name=MERGE_PR.name)
    async def merge_pr(self, inp: MergePrIn) -> MergePrOut:
        task = self._task(inp.number)
        self.merges.append(inp)
        pr = self.prs[task]
        if pr.merged:
            return MergePrOut(merged=True, commit=pr.merge_commit)
        if task in self.script.refused_once:
            self.script.refused_once.discard(task)
            return MergePrOut(merged=False, reason="Base branch was modified")
        if task in self.script.protected:
            return MergePrOut(merged=False, reason="review required", handed_to="auto-merge")
        if task in self.script.conflict_once:
            self.script.conflict_once.discard(task)
            return MergePrOut(merged=False, reason="not mergeable", conflict=True)
        pr.open, pr.merged, pr.merge_commit = False, True, f"squash-{task}-{inp.head_sha}"
        self.log.append(("merged", task))
        return MergePrOut(merged=True, commit=pr.merge_commit)

    @activity.defn(name=CLOSE_PR.name)
    async def close_pr(self, inp: ClosePrIn) -> ClosePrOut:
        pr = self.prs[self._task(inp.number)]
        if not pr.open:
            return ClosePrOut(closed=False)
        pr.open, pr.closed_by = False, "pipeline"
        self.closed.append((self._task(inp.number), inp.why))
        return ClosePrOut(closed=True)

    @activity.defn(name=WITHDRAW_PR.name)
    async def withdraw(self, inp: WithdrawIn) -> WithdrawOut:
        self.withdrawn.append((self._task(inp.number), inp.handed_to))
        return WithdrawOut(withdrawn=True)

    def all(self) -> list:
        return [self.push_branch, self.open_pr, self.post_review, self.read_pr, self.merge_pr,
                self.close_pr, self.withdraw]  # fmt: skip
