"""The Flower ServerApp, over the same round driver as the in-process engine
(`medpriv.train.federated.rounds.drive`); its ClientApp is `medpriv.train.federated.flower_client`.

The ServerApp reads a `FederatedJob` (path in the run config, key `job`), asks every SuperNode
which site it is and how many training records it holds, then runs the rounds through the one
round driver with a `GridPool`: TRAIN messages (weights as an ArrayRecord; recipe, round,
planned rounds and preprocessing as a ConfigRecord, plus a per-client seed for plain rounds
only), replies checked and aggregated, the global model validated on the coordinator's patients
and checkpointed after every round. A node that errs, refuses (its privacy policy forbids the
recipe) or does not answer in time is recorded as dropped for that round, with the reason.
Outputs land in the job's `out` folder: final.npz, best.npz, history.json, checkpoint.pt and
done.json.

The coordinator sends nothing that sets or seeds a DP client's noise or Poisson masks: each
SuperNode draws them itself, under its own policy, and reports its own ε (fedavg-dp). Under
fedavg-cdp the coordinator's own noise and each site's participation come from its fresh CSPRNG
source, and the history withholds who took part (see `private.ClientLevelAccountant`).

Everything crosses the wire as ArrayRecord arrays and scalar/JSON-text configs; nothing pickled.
"""

from __future__ import annotations

import json
import time
import traceback
from pathlib import Path

import numpy as np
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    RecordDict,
)
from flwr.serverapp import Grid, ServerApp

from medpriv.attacks.canary_audit import (
    DEPLOYMENT_RUNS_THREAT_MODEL,
    audit_block,
    recorded_mechanism_audit,
)
from medpriv.attacks.fl_received import (
    MAX_ROWS,
    SCORE_KEYS,
    SCORE_TASK,
    ReceivedUpdate,
    client_updates_kind,
    received_block,
    target_site,
    timed_inversion,
)
from medpriv.attacks.inversion import FeatureLayout, FeaturePrior
from medpriv.data.preprocess import Preprocessor
from medpriv.data.sources import load_dataset
from medpriv.data.splits import split_by_unit
from medpriv.errors import ProtocolError
from medpriv.files import write_text_atomic
from medpriv.privacy.plan import VALIDATION_CAVEAT
from medpriv.privacy.randomness import NoiseSource
from medpriv.privacy.statement import PrivacySpent
from medpriv.report.files import write_reports
from medpriv.results import results_json
from medpriv.train.federated.client import ClientUpdate, LocalRecipe, client_seed
from medpriv.train.federated.engine import initial_weights
from medpriv.train.federated.evaluation import (
    ScoreHistogram,
    federated_exposure,
    federated_utility,
)
from medpriv.train.federated.job import FederatedJob
from medpriv.train.federated.messaging import exchange
from medpriv.train.federated.outcome import federated_results
from medpriv.train.federated.private import (
    ClientLevelAccountant,
    SampleLevelAccountant,
    refusal_caveats,
    with_client_rule,
)
from medpriv.train.federated.rounds import Federation, RoundPlan, drive
from medpriv.train.federated.secagg import SecAggSettings, SecureRound, secure_round
from medpriv.train.federated.server import (
    clients_per_round,
    report_from_metrics,
)
from medpriv.train.federated.strategy import Strategy, make_strategy
from medpriv.train.federated.weights import Weights
from medpriv.untrusted import printable

server_app = ServerApp()

SECAGG_STATEMENT = (
    "SecAgg+ (Flower's implementation): the coordinator saw only each round's records-weighted "
    "mean of the clients' weights, plus each client's record count and training loss; it "
    "protects against an honest-but-curious coordinator, not a malicious one (Flower derives "
    "masks from 32-bit seeds)"
)


# --- server side -------------------------------------------------------------------------------


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    job = FederatedJob.read(Path(str(context.run_config["job"])))
    out = Path(job.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        run_server(grid, job)
    except Exception:
        (out / "error.txt").write_text(traceback.format_exc(), encoding="utf-8")
        raise


def coordinator_validation(job: FederatedJob) -> tuple[Preprocessor, np.ndarray, np.ndarray]:
    """The coordinator's validation patients (the standard split's validation part of its data),
    the preprocessing fitted on them, and their design matrix and labels."""
    split = job.split_config()
    val = split_by_unit(
        load_dataset(job.data_config()),
        val_fraction=split.val_fraction,
        test_fraction=split.test_fraction,
        seed=job.seed,
    ).val
    pre = Preprocessor(val.schema).fit(val.features)
    return pre, pre.transform(val.features), val.labels.astype(np.int64)


def run_server(grid: Grid, job: FederatedJob) -> None:
    out = Path(job.out)
    recipe = LocalRecipe.from_config(job.recipe)
    pre, x_val, y_val = coordinator_validation(job)
    shared = {
        "preprocessor": json.dumps(pre.state_dict()),
        "val-fraction": float(job.split["val_fraction"]),
        "test-fraction": float(job.split["test_fraction"]),
        "private": job.method == "fedavg-dp",  # DP clients keep one record per unit
    }
    sites, sizes = _discover(grid, job, shared)
    recipe, strategy, accountant, min_clients, participation = plan_method(
        job, recipe, sizes, in_features=x_val.shape[1]
    )
    hidden = isinstance(accountant, ClientLevelAccountant) and accountant.hidden
    if isinstance(accountant, SampleLevelAccountant):
        # each client accounts at the smaller of its own δ and this one (below 1/n for the n
        # patients of the whole federation, which no site can count)
        shared["federation-delta"] = float(accountant.delta)
    checkpoint = out / "checkpoint.pt"
    # What a resume must match (not the sites: a restarted run may have lost a hospital).
    meta = {
        "method": job.method,
        "seed": job.seed,
        "strategy": strategy.name,
        "hidden": list(recipe.hidden),
    }
    rounds_plan = RoundPlan(
        recipe=recipe,
        strategy=strategy,
        rounds=job.rounds,
        fraction=job.fraction,
        min_clients=min_clients,
        seed=job.seed,
        accountant=accountant,
        participation=participation,
        quiet=hidden,
        checkpoint=checkpoint,
        meta=meta,
    )
    federation = Federation.start(
        initial_weights(
            x_val.shape[1], recipe.hidden, seed=job.seed, positive_rate=float(np.mean(y_val))
        )
    )
    if job.resume and checkpoint.exists():
        federation, _ = Federation.resumed(rounds_plan)

    def after_round(round_number: int, state: Federation, record: dict) -> None:
        who = (
            "participants withheld"
            if hidden
            else f"{record['clients']} clients, dropped {sorted(record['dropped'])}"
        )
        print(
            f"[medpriv] round {round_number}: {who}, val AUROC {record['val_auroc']:.4f}",
            flush=True,
        )
        for site, reason in sorted((record.get("dropped") or {}).items()):
            if reason.startswith("refused"):
                print(f"[medpriv]   {printable(site)} {printable(reason)}", flush=True)

    started = time.perf_counter()
    pool = GridPool(grid, job, sites=sites, sizes=sizes, shared=shared)
    drive(
        pool,
        federation,
        rounds_plan,
        validation=(x_val, y_val),
        on_round=after_round,
    )
    train_seconds = time.perf_counter() - started  # this process's rounds, at the coordinator
    history = federation.history
    last = federation.history[-1] if federation.history else {}
    lost = {  # a refusal comes from a live node: only the silent and the failed are skipped
        site: f"not asked: no update in the last round ({reason})"
        for site, reason in (last.get("dropped") or {}).items()
        if not str(reason).startswith("refused")
    }
    histograms, membership, missing = evaluate_on_sites(
        grid, job, sites, shared, federation.best, recipe.hidden, lost
    )
    evaluation = {**federated_utility(histograms), "missing": missing}
    inversion = coordinator_inversion(
        grid, job, pool, recipe=recipe, pre=pre, x_val=x_val, lost=lost
    )
    exposure = federated_exposure(membership)
    combined = evaluation["combined"]
    if combined["auroc"] is not None:
        print(
            f"[medpriv] held-out patients at the sites: n = {combined['n']}, AUROC "
            f"{combined['auroc']:.4f} ± {combined['auroc_binning_error']:.4f} (binning)",
            flush=True,
        )
    np.savez(out / "final.npz", *federation.weights)
    np.savez(out / "best.npz", *federation.best)
    (out / "history.json").write_text(json.dumps(history, indent=1), encoding="utf-8")
    spent = (
        accountant.spent([VALIDATION_CAVEAT, *refusal_caveats(history)])
        if accountant is not None
        else PrivacySpent(sampling="shuffle")
    )
    privacy = spent.to_dict()
    # the mechanism as recorded, audited over many runs at the coordinator (a block only when
    # the statement records a complete one: σ, q, steps, C, δ, ε)
    runs = recorded_mechanism_audit(spent, threat_model=DEPLOYMENT_RUNS_THREAT_MODEL)
    audit = (
        None if runs is None else audit_block(white_box=None, black_box=None, white_box_runs=runs)
    )
    (out / "done.json").write_text(
        json.dumps(
            {
                "rounds": len(history),
                "sites": sites,
                "sizes": sizes,
                "privacy": privacy,
                "secure_aggregation": SECAGG_STATEMENT if job.secagg else None,
                "evaluation": evaluation,
                "membership_exposure": exposure,
                "inversion": inversion,
                "audit": audit,
            }
        ),
        encoding="utf-8",
    )
    document = federated_results(
        job,
        dataset=load_dataset(job.data_config()),
        recipe=recipe,
        strategy=strategy.name,
        sizes=sizes,
        history=history,
        histograms=histograms,
        evaluation=evaluation,
        exposure=exposure,
        inversion=inversion,
        audit=audit,
        spent=spent,
        train_seconds=train_seconds,
    )
    text = results_json(document)  # checked and serialized once; the reports read it back
    write_reports(json.loads(text), out)
    write_text_atomic(text, out / "results.json")


def evaluate_on_sites(
    grid: Grid,
    job: FederatedJob,
    sites: dict[str, int],
    shared: dict,
    weights: Weights,
    hidden: tuple[int, ...],
    lost: dict[str, str] | None = None,
) -> tuple[dict[str, ScoreHistogram], dict[str, ScoreHistogram], dict[str, str]]:
    """Federated evaluation of `weights`: every site scores it on its own held-out patients and
    attacks it with its own patients, returning histograms only (`federated.evaluation`); (the
    utility histograms by site, the membership histograms by site, the sites that returned
    none with why). Sites in `lost` (they sent no update in the last round: failed, gone or
    silent) are not asked again — waiting a whole round timeout for each would only delay
    the report."""
    lost = lost or {}
    connected = set(grid.get_node_ids()) - {sites[site] for site in lost if site in sites}
    messages = {
        site: Message(
            content=RecordDict(
                {
                    "arrays": ArrayRecord([np.asarray(w) for w in weights]),
                    "config": ConfigRecord({**shared, "hidden": json.dumps(list(hidden))}),
                }
            ),
            dst_node_id=node,
            message_type=MessageType.EVALUATE,
        )
        for site, node in sites.items()
        if node in connected
    }
    histograms: dict[str, ScoreHistogram] = {}
    membership: dict[str, ScoreHistogram] = {}
    missing = {
        site: lost.get(site, "node not connected")
        for site, node in sites.items()
        if node not in connected
    }
    for site, reply in exchange(grid, messages, job.round_timeout, job.poll_interval).items():
        if isinstance(reply, str):
            missing[site] = reply
            continue
        try:
            found = ScoreHistogram.from_metrics(reply.content["histogram"])
            exposed = ScoreHistogram.from_metrics(reply.content["membership"])
            histograms[site], membership[site] = found, exposed
        except (KeyError, ValueError) as exc:
            missing[site] = f"rejected: {exc}"
    return histograms, membership, dict(sorted(missing.items()))


class GridPool:
    """The Flower `ClientPool`: the SuperNodes reached through the Grid, one per site. TRAIN
    messages carry the weights (an ArrayRecord) and the recipe, round and preprocessing (a
    ConfigRecord, plus a per-client seed for plain rounds only); a node that is not connected,
    errs, refuses or does not answer in time is recorded with the reason. With `job.secagg`
    a round goes through SecAgg+ and only the aggregate comes back."""

    def __init__(
        self,
        grid: Grid,
        job: FederatedJob,
        *,
        sites: dict[str, int],
        sizes: dict[str, int],
        shared: dict,
    ) -> None:
        self.grid, self.job, self.sites, self.sizes, self.shared = grid, job, sites, sizes, shared
        # the coordinator's real view for its inversion attack: the smallest site's update in
        # the first round this process ran (None under SecAgg+, or before any round)
        self.received: ReceivedUpdate | None = None

    def names(self) -> list[str]:
        return list(self.sites)

    def collect(
        self,
        chosen: list[str],
        weights: Weights,
        recipe: LocalRecipe,
        *,
        round_number: int,
        rounds: int,
    ) -> dict[str, ClientUpdate | str] | SecureRound:
        config = {
            **self.shared,
            **recipe.to_config(),
            "round": round_number,
            "planned-rounds": rounds,
        }
        if self.job.secagg:
            return self._secure(chosen, weights, config, round_number)
        replies = _train_round(
            self.grid, self.job, self.sites, chosen, weights, config, round_number
        )
        if self.received is None:
            self.received = _smallest_update(replies, weights, round_number)
        return replies

    def _secure(
        self, chosen: list[str], weights: Weights, config: dict, round_number: int
    ) -> SecureRound:
        """A round under SecAgg+ (the coordinator sees the aggregate only)."""
        job = self.job
        settings = SecAggSettings(shares=job.secagg_shares, threshold=job.secagg_threshold)
        connected = set(self.grid.get_node_ids())
        reachable = [site for site in chosen if self.sites[site] in connected]
        fit_configs = {
            site: {
                **config,
                **_plain_seed(config, job, round_number, site),
                "secagg-clip": settings.clipping_range,
            }
            for site in reachable
        }
        outcome = secure_round(
            self.grid,
            nodes=self.sites,
            fit_configs=fit_configs,
            weights=weights,
            sizes=self.sizes,
            round_number=round_number,
            timeout=job.round_timeout,
            poll=job.poll_interval,
            settings=settings,
        )
        outcome.dropped.update(
            {site: "node not connected" for site in chosen if site not in reachable}
        )
        return outcome


def plan_method(
    job: FederatedJob, recipe: LocalRecipe, sizes: dict[str, int], *, in_features: int
) -> tuple[
    LocalRecipe,
    Strategy,
    SampleLevelAccountant | ClientLevelAccountant | None,
    int,
    NoiseSource | None,
]:
    """(client recipe, aggregation, accountant, min clients, the source of Poisson client
    participation or None) for the job's method — the same plan the in-process trainers make.
    fedavg-dp's accountant takes the clients' own ε reports; fedavg-cdp's noise source is the
    coordinator's, fresh (replayable only if the job's privacy asks for reproducible noise)."""
    if job.method == "fedavg-dp":
        recipe, _ = with_client_rule(
            recipe,
            sizes,
            in_features=in_features,
            privacy=job.privacy_config(),
            rounds=job.rounds,
            per_round=clients_per_round(
                len(sizes), fraction=job.fraction, min_clients=job.min_clients
            ),
            n_units=sum(sizes.values()),
            unset=frozenset(job.rule_fields),
        )
        accountant = SampleLevelAccountant(
            sizes=sizes,
            recipe=recipe,
            rounds=job.rounds,
            privacy=job.privacy_config(),
            n_units=sum(sizes.values()),
        )
        return (
            accountant.private_recipe(),
            make_strategy("fedavg"),
            accountant,
            job.min_clients,
            None,
        )
    if job.method == "fedavg-cdp":
        privacy = job.privacy_config()
        accountant = ClientLevelAccountant(
            n_clients=len(sizes),
            fraction=job.fraction,
            rounds=job.rounds,
            privacy=privacy,
            n_units=sum(sizes.values()),
            noise=NoiseSource.for_run(reproducible=privacy.reproducible_noise, seed=job.seed),
            publish_participants=job.publish_participants,
        )
        inner = make_strategy(job.strategy, server_lr=job.server_lr)
        return recipe, accountant.strategy(inner), accountant, 0, accountant.participation()
    return (
        recipe,
        make_strategy(job.strategy, server_lr=job.server_lr),
        None,
        job.min_clients,
        None,
    )


def _discover(grid: Grid, job: FederatedJob, shared: dict) -> tuple[dict[str, int], dict[str, int]]:
    """(site name -> node id, site name -> training records), after waiting for
    `expected_clients` SuperNodes to connect."""
    deadline = time.monotonic() + job.node_wait_timeout
    node_ids = sorted(grid.get_node_ids())
    while len(node_ids) < job.expected_clients and time.monotonic() < deadline:
        time.sleep(job.poll_interval)
        node_ids = sorted(grid.get_node_ids())
    if not node_ids:
        raise ProtocolError("no SuperNode connected to the SuperLink")
    messages = {
        node: Message(
            content=RecordDict({"config": ConfigRecord(dict(shared))}),
            dst_node_id=node,
            message_type=MessageType.QUERY,
        )
        for node in node_ids
    }
    replies = exchange(grid, messages, job.round_timeout, job.poll_interval)
    sites: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for node, reply in replies.items():
        if isinstance(reply, str):
            print(f"[medpriv] node {node} left out: {printable(reply)}", flush=True)
            continue
        name = str(reply.content["site"]["name"])
        if name in sites:
            raise ProtocolError(f"two SuperNodes claim site {name!r}; give each its own site")
        sites[name], sizes[name] = node, int(reply.content["metrics"]["num-examples"])
    if len(sites) < job.min_clients:
        raise ProtocolError(f"only {len(sites)} usable SuperNodes; need {job.min_clients}")
    return dict(sorted(sites.items())), dict(sorted(sizes.items()))


def _train_round(
    grid: Grid,
    job: FederatedJob,
    sites: dict[str, int],
    chosen: list[str],
    weights: Weights,
    config: dict,
    round_number: int,
) -> dict[str, ClientUpdate | str]:
    connected = set(grid.get_node_ids())
    replies: dict[str, ClientUpdate | str] = {}
    messages = {}
    for site in chosen:
        if sites[site] not in connected:
            replies[site] = "node not connected"
            continue
        messages[site] = Message(
            content=RecordDict(
                {
                    "arrays": ArrayRecord([np.asarray(w) for w in weights]),
                    "config": ConfigRecord(
                        {**config, **_plain_seed(config, job, round_number, site)}
                    ),
                }
            ),
            dst_node_id=sites[site],
            message_type=MessageType.TRAIN,
            group_id=str(round_number),
        )
    for site, reply in exchange(grid, messages, job.round_timeout, job.poll_interval).items():
        replies[site] = reply if isinstance(reply, str) else _as_update(reply)
    return replies


def _smallest_update(
    replies: dict[str, ClientUpdate | str], sent: Weights, round_number: int
) -> ReceivedUpdate | None:
    """The update of the smallest site that sent one, with the weights it was sent."""
    updates = {site: r for site, r in replies.items() if isinstance(r, ClientUpdate)}
    site = target_site({site: u.n_examples for site, u in updates.items()})
    if site is None:
        return None
    return ReceivedUpdate(
        site=site,
        round_number=round_number,
        sent=[np.array(w, copy=True) for w in sent],
        returned=updates[site].weights,
        n_examples=updates[site].n_examples,
    )


def coordinator_inversion(
    grid: Grid,
    job: FederatedJob,
    pool: GridPool,
    *,
    recipe: LocalRecipe,
    pre: Preprocessor,
    x_val: np.ndarray,
    lost: dict[str, str],
) -> dict:
    """`attacks.fl_inversion_received`: the coordinator inverts the update it received
    (`medpriv.attacks.fl_received`) and the site it came from scores the reconstruction,
    returning aggregates only; or why it did not run."""
    kind = client_updates_kind(recipe, job.method)
    received = pool.received
    why = None
    if job.secagg:
        why = "secure aggregation: the coordinator saw only each round's aggregate"
    elif received is None:
        why = "no site sent an update in the rounds this process ran"
    elif received.n_examples > MAX_ROWS:
        why = f"the smallest site's update covers {received.n_examples:,} rows (> {MAX_ROWS:,})"
    elif received.site in lost:
        why = f"the attacked site is gone and cannot score it ({lost[received.site]})"
    if why is not None or received is None:
        return received_block(received=None, scores=None, kind=kind, not_run=why)
    layout, prior = FeatureLayout.from_preprocessor(pre), FeaturePrior.from_data(x_val)
    found, seconds = timed_inversion(
        received, recipe=recipe, prior=prior, layout=layout, seed=job.seed
    )
    message = Message(
        content=RecordDict(
            {
                "arrays": ArrayRecord(
                    [
                        found.x.astype(np.float32),
                        found.labels.astype(np.int64),
                        prior.mean,
                        prior.std,
                    ]
                ),
                "config": ConfigRecord({**pool.shared, "task": SCORE_TASK}),
            }
        ),
        dst_node_id=pool.sites[received.site],
        message_type=MessageType.EVALUATE,
    )
    reply = exchange(grid, {0: message}, job.round_timeout, job.poll_interval)[0]
    scores: dict[str, float] | str
    if isinstance(reply, str):
        scores = f"the site did not score it: {reply}"
    else:
        try:
            returned = reply.content["inversion"]
            scores = {k: float(returned[k]) for k in SCORE_KEYS if k in returned}
        except (KeyError, TypeError, ValueError) as exc:
            scores = f"rejected: malformed reply ({type(exc).__name__})"
    return received_block(
        received=received, scores=scores, kind=kind, seconds=seconds, method=found.method
    )


def _plain_seed(config: dict, job: FederatedJob, round_number: int, site: str) -> dict[str, int]:
    """The per-client seed of a plain round's batch order (no guarantee rests on it); a DP
    round gets none: its client draws its masks and noise from its own source."""
    if float(config.get("noise_multiplier", -1.0)) >= 0:
        return {}
    return {"seed": client_seed(job.seed, round_number, site)}


def _as_update(reply: Message) -> ClientUpdate | str:
    """A client's reply as a ClientUpdate, or why it cannot be one (a refusal with its
    reason)."""
    try:
        if "refusal" in reply.content.config_records:
            return f"refused: {reply.content.config_records['refusal']['reason']}"
        metrics = reply.content["metrics"]
        loss, rate = float(metrics["train-loss"]), float(metrics["sample-rate"])
        report = report_from_metrics(metrics)
        return ClientUpdate(
            weights=reply.content["arrays"].to_numpy_ndarrays(),
            n_examples=int(metrics["num-examples"]),
            train_loss=None if loss < 0 else loss,
            steps=int(metrics["steps"]),
            sample_rate=None if rate < 0 else rate,
            epsilon=None if report is None else report["epsilon"],
            delta=None if report is None else report["delta"],
            noise=None if report is None else report["noise"],
        )
    except Exception as exc:  # a malformed reply is that client's problem, not the run's
        return f"rejected: malformed reply ({type(exc).__name__}: {exc})"
