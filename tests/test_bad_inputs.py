"""Issue 13: every kind of bad input is refused at the door with one `error:` line (exit 2), no
traceback, and no cell value of the input file in the output; data that is odd but usable (±inf,
blank privacy-unit ids) is accepted with a note that gives counts only.

The kinds are a table: command-line options, TOML configs, CSV contents, output paths and
federated options, each run through the real CLI in-process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from medpriv.cli import app
from medpriv.cli_common import BAD_INPUT_EXIT
from medpriv.data.splits import MIN_PER_CLASS

# Distinctive cell values: none may ever appear in what the CLI prints.
SECRET_NUMBER = 987654.321
SECRET_WORD = "zebra-7731"
SECRET_ID = "P-55501"
SECRETS = ("987654.321", "987654", SECRET_WORD, SECRET_ID)


def table(n: int = 300, *, seed: int = 0, positive_rate: float = 0.4) -> pd.DataFrame:
    """A small valid cohort: an id, a site, numeric and categorical features and a 0/1 outcome;
    the first row carries the distinctive values."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "pid": [f"P-{55501 + i}" for i in range(n)],
            "site": rng.choice(["north", "south"], size=n),
            "age": np.round(rng.uniform(18, 90, size=n), 2),
            "ward": rng.choice(["icu", "cardiac", "surgery"], size=n),
            "y": (rng.random(n) < positive_rate).astype(int),
        }
    )
    frame.loc[0, ["age", "ward"]] = [SECRET_NUMBER, SECRET_WORD]
    frame.loc[:1, "y"] = [0, 1]
    return frame


def write_csv(path: Path, frame: pd.DataFrame) -> str:
    frame.to_csv(path, index=False)
    return f"csv:{path}"


@dataclass(frozen=True)
class Kind:
    """One kind of bad input: `args(tmp_path)` gives the command line; the error line must
    contain every one of `needles`; `at_door`: nothing may be written to `tmp_path/runs`."""

    name: str
    args: Callable[[Path], list[str]]
    needles: tuple[str, ...] = ()
    at_door: bool = True


def run_args(tmp: Path, *extra: str, frame: pd.DataFrame | None = None) -> list[str]:
    data = write_csv(tmp / "cohort.csv", table() if frame is None else frame)
    return [
        *("run", "--data", data, "--target", "y", "--unit-column", "pid", "--methods", "logreg"),
        *("--attacks", "none", "--out", str(tmp / "runs"), "--no-progress", *extra),
    ]


def option(flag: str, value: str, *needles: str) -> Kind:
    return Kind(f"{flag}={value}", lambda tmp: run_args(tmp, flag, value), (flag, *needles))


def config(name: str, text: str | bytes, *needles: str) -> Kind:
    def args(tmp: Path) -> list[str]:
        path = tmp / "exp.toml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        return run_args(tmp, "--config", str(path))

    return Kind(f"toml:{name}", args, needles)


def csv_case(
    name: str,
    change: Callable[[pd.DataFrame], pd.DataFrame],
    *extra: str,
    needles: tuple[str, ...] = (),
) -> Kind:
    return Kind(
        f"csv:{name}",
        lambda tmp: run_args(tmp, *extra, frame=change(table())),
        needles,
        at_door=False,
    )


def _set(column: str, rows: slice | list[int], value: object) -> Callable:
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.astype({column: object}) if isinstance(value, str) else frame
        frame.loc[rows, column] = value
        return frame

    return change


def _extract(tmp: Path, out: Path, *extra: str) -> list[str]:
    data = write_csv(tmp / "cohort.csv", table())
    return ["data", "extract", "--data", data, "--target", "y", "--out", str(out), *extra]


def _existing_folder(tmp: Path) -> Path:
    (tmp / "folder").mkdir()
    return tmp / "folder"


def _under_a_file(tmp: Path) -> Path:
    (tmp / "plain.txt").write_text("x", encoding="utf-8")
    return tmp / "plain.txt" / "cohort.csv"


def whole_config(name: str, text: str, *needles: str) -> Kind:
    """A TOML config that says everything itself (no flag overrides it) plus `text`."""

    def args(tmp: Path) -> list[str]:
        data = write_csv(tmp / "cohort.csv", table())
        path = tmp / "exp.toml"
        path.write_text(
            f'[data]\nspec = "{data}"\ntarget = "y"\nunit_column = "pid"\n{text}',
            encoding="utf-8",
        )
        return ["run", "--config", str(path), "--no-progress"]

    return Kind(f"toml:{name}", args, needles)


def raw_csv(name: str, text: bytes | str, *extra: str, needles: tuple[str, ...] = ()) -> Kind:
    """A CSV file written byte for byte (not through pandas)."""

    def args(tmp: Path) -> list[str]:
        path = tmp / "raw.csv"
        if isinstance(text, str):
            path.write_text(text, encoding="utf-8")
        else:
            path.write_bytes(text)
        return [*run_args(tmp, *extra), "--data", f"csv:{path}"]

    return Kind(f"csv:{name}", args, needles, at_door=False)


def _rows(n: int = 60, sep: str = ",") -> str:
    """`n` data rows (pid, age, y) whose first row carries the distinctive values."""
    rows = [f"{SECRET_ID}{sep}{SECRET_NUMBER}{sep}0"]
    rows += [f"P-{i}{sep}{20 + i % 60}{sep}{i % 2}" for i in range(1, n)]
    return "\n".join(rows) + "\n"


def fl(*args: str, needles: tuple[str, ...] = ()) -> Kind:
    """A `medpriv fl` command; `OUT` stands for a fresh output folder."""
    return Kind(
        "fl " + " ".join(args),
        lambda tmp: ["fl", *(str(tmp / "fl") if a == "OUT" else a for a in args)],
        needles,
    )


KINDS = [
    # --- command-line options: non-finite and out-of-range numbers ---------------------------
    option("--target-epsilon", "nan", "privacy.target_epsilon"),
    option("--target-epsilon", "inf", "privacy.target_epsilon"),
    option("--target-epsilon", "-1", "privacy.target_epsilon"),
    option("--noise-multiplier", "nan", "privacy.noise_multiplier"),
    option("--noise-multiplier", "inf", "privacy.noise_multiplier"),
    option("--max-grad-norm", "nan", "privacy.max_grad_norm"),
    option("--max-grad-norm", "0", "privacy.max_grad_norm"),
    option("--delta", "nan", "privacy.delta"),
    option("--delta", "1", "privacy.delta"),
    option("--budget", "inf", "privacy.budget"),
    option("--data-norm", "nan", "privacy.data_norm"),
    option("--lr", "nan", "train.lr"),
    option("--lr", "-inf", "train.lr"),
    option("--lr", "0", "train.lr"),
    option("--dropout", "nan", "train.dropout"),
    option("--dropout", "1", "train.dropout"),
    option("--epochs", "0", "train.epochs"),
    option("--batch-size", "0", "train.batch_size"),
    option("--hidden", "128,0", "train.hidden"),
    option("--hidden", "128,abc"),
    option("--seeds", "0", "run.seeds"),
    option("--shadow-models", "1", "run.shadow_models"),
    option("--attack-units", "0", "run.attack_units"),
    option("--epsilons", "1,nan", "run.epsilons"),
    option("--epsilons", "1,inf", "run.epsilons"),
    option("--epsilons", "1,abc", "epsilons"),
    option("--threshold", "nan", "data.threshold"),
    option("--threshold", "inf", "data.threshold"),
    option("--window-hours", "12", "window_hours"),
    option("--methods", "dp-sgd@nan", "dp-sgd@nan"),
    option("--methods", "dp-sgd@inf", "dp-sgd@inf"),
    option("--activation-noise", "nan", "split_learning.noise"),
    option("--gradient-noise", "-1", "split_learning.gradient_noise"),
    option("--nopeek", "inf", "split_learning.nopeek"),
    option("--cut", "0", "split_learning.cut"),
    # --- values finite but beyond what can run (each once hung, overflowed or crashed) --------
    option("--target-epsilon", "1e308", "privacy.target_epsilon", "(0, 100]"),
    option("--noise-multiplier", "1e300", "privacy.noise_multiplier"),
    option("--delta", "1e-300", "privacy.delta"),
    option("--hidden", "65536,65536", "train.hidden", "4096"),
    option("--hidden", ",".join(["8"] * 40), "train.hidden", "1 to 16"),
    option("--shadow-models", "100000", "run.shadow_models"),
    option("--methods", "dp-sgd@1e300", "--methods", "(0, 100]"),
    option("--epochs", "99999999999", "train.epochs"),
    # --- other settings of `medpriv run` ---------------------------------------------------------
    option("--out", "", "--out", "empty"),
    option("--attacks", "mia_nope", "--attacks", "mia_nope"),
    Kind(
        "--methods=nosuch",
        lambda tmp: run_args(tmp, "--methods", "nosuch"),
        ("unknown method 'nosuch'", "valid:"),
    ),
    Kind(
        "--methods=logreg,logreg",
        lambda tmp: run_args(tmp, "--methods", "logreg,logreg"),
        ("run.methods", "twice"),
    ),
    option("--accountant", "moments", "--accountant"),
    option("--label", "death", "--label"),
    option("--sl-server", "host:99999", "--sl-server", "65535"),
    option("--sl-ca-cert", "/nonexistent/ca.pem", "--sl-ca-cert", "/nonexistent/ca.pem"),
    # --- command-line syntax: one `error:` line too, naming where the options are listed ----
    option("--epochs", "abc", "--epochs", "run --help"),
    option("--target-epsilon", "1/0", "--target-epsilon"),
    option("--no-such-option", "1", "--no-such-option"),
    Kind("unknown command", lambda tmp: ["trian"], ("trian", "--help")),
    Kind(
        "extract without --out",
        lambda tmp: ["data", "extract", "--data", "synthetic:50"],
        ("--out", "data extract --help"),
    ),
    # --- federated options -------------------------------------------------------------------
    option("--rounds", "0", "federated.rounds"),
    option("--fraction", "nan", "federated.fraction"),
    option("--fraction", "1.5", "federated.fraction"),
    option("--min-clients", "0", "federated.min_clients"),
    option("--min-client-size", "0", "federated.min_client_size"),
    option("--proximal-mu", "nan", "federated.proximal_mu"),
    option("--server-lr", "inf", "federated.server_lr"),
    option("--partition", "iid:1", "1 client", "minimum of 2"),
    option("--partition", "dirichlet:3:nan", "ALPHA"),
    option("--partition", "iid:abc", "iid:K"),
    Kind(
        "--partition=iid:3 --min-clients=5",
        lambda tmp: run_args(tmp, "--partition", "iid:3", "--min-clients", "5"),
        ("--partition", "minimum of 5"),
    ),
    Kind(
        "fedavg on a single site",
        lambda tmp: run_args(
            tmp,
            *("--methods", "fedavg", "--partition", "site", "--site-column", "site"),
            frame=table().assign(site=SECRET_WORD),
        ),
        ("too few clients", "1 client", "minimum of 2"),
        at_door=False,
    ),
    Kind(
        "fedavg --partition site without sites",
        lambda tmp: run_args(tmp, "--methods", "fedavg", "--partition", "site"),
        ("--site-column",),
        at_door=False,
    ),
    # --- data sources --------------------------------------------------------------------------
    Kind("synthetic:nan", lambda tmp: [*run_args(tmp), "--data", "synthetic:nan"], ("synthetic",)),
    Kind("synthetic:0", lambda tmp: [*run_args(tmp), "--data", "synthetic:0"], ("synthetic",)),
    Kind(
        "missing CSV file",
        lambda tmp: [*run_args(tmp), "--data", f"csv:{tmp / 'no.csv'}"],
        ("no.csv", "not found"),
    ),
    Kind(
        "synthetic:-5",
        lambda tmp: ["data", "extract", "--data", "synthetic:-5", "--out", str(tmp / "c.csv")],
        ("synthetic",),
    ),
    Kind(
        "data synth --stays 0",
        lambda tmp: ["data", "synth", "--out", str(tmp / "t"), "--stays", "0"],
        ("--stays",),
    ),
    Kind("unknown source", lambda tmp: [*run_args(tmp), "--data", "parquet:x"], ("parquet", "csv")),
    # --- TOML configs --------------------------------------------------------------------------
    config("data = 5", "data = 5\n", "'data'", "[data] section"),
    config("train = string", 'train = "fast"\n', "'train'", "[train] section"),
    config("nan ε", "[privacy]\ntarget_epsilon = nan\n", "privacy.target_epsilon"),
    config("inf δ", "[privacy]\ndelta = inf\n", "privacy.delta"),
    config("-inf σ", "[privacy]\nnoise_multiplier = -inf\n", "privacy.noise_multiplier"),
    config("nan clip", "[privacy]\nmax_grad_norm = nan\n", "privacy.max_grad_norm"),
    config("lr as text", '[train]\nlr = "0.1"\n', "[train] lr", "a number"),
    config("epochs 2.5", "[train]\nepochs = 2.5\n", "[train] epochs", "whole number"),
    config("epochs true", "[train]\nepochs = true\n", "[train] epochs", "whole number"),
    config("epochs huge", "[train]\nepochs = 99999999999999\n", "train.epochs"),
    config("hidden text", '[train]\nhidden = "a,b"\n', "[train] hidden"),
    config("hidden zero", "[train]\nhidden = [128, 0]\n", "train.hidden"),
    config("hidden table", "[train.hidden]\nwidth = 3\n", "[train] hidden"),
    config("momentum 1", "[train]\nmomentum = 1.0\n", "train.momentum"),
    config("seeds list", "[run]\nseeds = [1]\n", "[run] seeds"),
    config("epsilons nan", "[run]\nepsilons = [1.0, nan]\n", "run.epsilons"),
    config(
        "date as text", "[privacy]\naccountant = 1979-05-27\n", "[privacy] accountant", "a string"
    ),
    config("rounds float", "[federated]\nrounds = 1e3\n", "[federated] rounds"),
    config("fraction inf", "[federated]\nfraction = inf\n", "federated.fraction"),
    config("test_fraction nan", "[split]\ntest_fraction = nan\n", "split.test_fraction"),
    config("fractions sum", "[split]\nval_fraction = 0.5\ntest_fraction = 0.45\n", "10%"),
    config("keep_duplicates text", '[data]\nkeep_duplicates = "yes"\n', "keep_duplicates"),
    config("threshold nan", "[data]\nthreshold = nan\n", "data.threshold"),
    config("unknown section", "[training]\nepochs = 2\n", "[training]"),
    config("top-level number", "seeds = 3\n", "[seeds]"),
    config("array of tables", '[[data]]\nspec = "x"\n', "'data'", "a list"),
    config("nested list", "[train]\nhidden = [[1, 2]]\n", "[train] hidden"),
    config("inline table", "[data]\nsensitive = {a = 1}\n", "[data] sensitive"),
    config("window as text", '[data]\nwindow_hours = "24"\n', "[data] window_hours"),
    config("ε too large", "[privacy]\ntarget_epsilon = 1e308\n", "privacy.target_epsilon"),
    config("δ zero", "[privacy]\ndelta = 0\n", "privacy.delta"),
    config("not UTF-8", b"[train]\nepochs = 2 # \xff\n", "exp.toml", "UTF-8"),
    whole_config("spec a number", "[run]\nmethods = [1, 2]\n", "[run] methods"),
    whole_config("out empty", '[run]\nout = ""\nattacks = []\n', "run.out", "--out"),
    whole_config("attacks unknown", '[run]\nattacks = ["mia_nope"]\n', "run.attacks"),
    whole_config("methods a number", "[run]\nmethods = 5\n", "[run] methods"),
    config("malformed", "[train\nepochs = 2\n", "cannot parse"),
    config("key with a newline", '[train]\n"a\\nb" = 1\n', "unknown keys"),
    Kind("config is a folder", lambda tmp: run_args(tmp, "--config", str(tmp)), ("is a folder",)),
    Kind(
        "config missing",
        lambda tmp: run_args(tmp, "--config", str(tmp / "no.toml")),
        ("no.toml", "not found"),
    ),
    # --- CSV contents --------------------------------------------------------------------------
    csv_case(
        "10 rows",
        lambda frame: frame.head(10),
        needles=(
            "too little to measure",
            f"test split needs at least {MIN_PER_CLASS} positive and {MIN_PER_CLASS} negative",
        ),
    ),
    csv_case(
        "3 positives",
        lambda frame: frame.assign(y=(np.arange(len(frame)) % 100 == 1).astype(int)),
        needles=("too little to measure",),
    ),
    csv_case(
        "unit column blank everywhere",
        _set("pid", slice(None), np.nan),
        "--unit-column",
        "pid",
        needles=("'pid'", "no value"),
    ),
    csv_case("target inf everywhere", lambda frame: frame.assign(y=np.inf), needles=("'y'",)),
    csv_case(
        "feature inf everywhere", _set("age", slice(None), -np.inf), needles=("'age'", "--drop age")
    ),
    csv_case("overflow magnitudes", _set("age", [3, 4], 1e300), needles=("'age'", "--drop")),
    csv_case("one class", lambda frame: frame.assign(y=1), needles=("single class",)),
    csv_case(
        "--positive never occurs", lambda frame: frame, "--positive", "7", needles=("--positive",)
    ),
    csv_case(
        "threshold on text target",
        lambda frame: frame.assign(y=frame["ward"]),
        "--threshold",
        "0.5",
        needles=("--positive",),
    ),
    csv_case(
        "identifier as a feature",
        lambda frame: frame,
        "--unit-column",
        "site",
        needles=("'pid'", "--drop pid"),
    ),
    csv_case(
        "target is also the unit",
        lambda frame: frame,
        "--unit-column",
        "y",
        needles=("'y'", "--unit-column"),
    ),
    csv_case("target dropped", lambda frame: frame, "--drop", "y", needles=("'y'", "--drop")),
    csv_case(
        "unknown sensitive column",
        lambda frame: frame,
        "--sensitive",
        "religion",
        needles=("religion",),
    ),
    raw_csv(
        "no header row",
        _rows(),
        "--unit-column",
        "pid",
        needles=("--target column 'y' not found", "header row"),
    ),
    raw_csv("semicolons", "pid;age;y\n" + _rows(sep=";"), needles=("comma-separated",)),
    raw_csv("not UTF-8", b"pid,age,y\n\xff\xfe,1,0\n", needles=("UTF-8",)),
    raw_csv("empty file", "", needles=("is empty",)),
    raw_csv("header only", "pid,age,y\n", needles=("no rows",)),
    raw_csv(
        "duplicate names, no header",
        "P-55501,1,1,0\n" + _rows(),
        needles=("duplicate column names;",),
    ),
    csv_case(
        "one unit for every row",
        lambda frame: frame.assign(pid=SECRET_ID),
        needles=("too little to measure", "(empty)"),
    ),
    csv_case(
        "target with three values",
        lambda frame: frame.assign(y=np.arange(len(frame)) % 3),
        needles=("not binary", "--positive"),
    ),
    csv_case(
        "identifier-like text feature",
        lambda frame: frame.assign(ward=[f"{SECRET_WORD}-{i}" for i in range(len(frame))]),
        needles=("'ward'", "--drop ward"),
    ),
    # --- federated deployment commands (`medpriv fl`) -------------------------------------------
    fl("run", "--out", "OUT", "--timeout", "nan", needles=("--timeout",)),
    fl("run", "--out", "OUT", "--nodes", "1", needles=("--nodes", ">= 2")),
    fl("run", "--out", "OUT", "--seed", "-1", needles=("--seed",)),
    fl("run", "--out", "OUT", "--rounds", "0", needles=("federated.rounds",)),
    fl("run", "--out", "OUT", "--target-epsilon", "inf", needles=("privacy.target_epsilon",)),
    fl("run", "--out", "OUT", "--strategy", "fedsgd", needles=("--strategy",)),
    fl(
        "local",
        "--out",
        "OUT",
        "--data",
        "synthetic:300",
        "--sites",
        "NOWHERE",
        needles=("--sites", "NOWHERE"),
    ),
    fl(
        "local",
        "--out",
        "OUT",
        "--data",
        "synthetic:300",
        "--sites",
        "MICU",
        needles=("too few clients", "1 client"),
    ),
    fl("local", "--out", "OUT", "--data", "synthetic:abc", needles=("synthetic:N",)),
    fl("supernode", "--data", "parquet:x", "--dry-run", needles=("parquet",)),
    fl("supernode", "--data", "synthetic", "--port", "0", "--dry-run", needles=("--port",)),
    fl(
        "supernode",
        "--data",
        "synthetic",
        "--threshold",
        "nan",
        "--dry-run",
        needles=("--threshold",),
    ),
    fl(
        "supernode",
        "--data",
        "synthetic",
        "--max-epsilon",
        "nan",
        "--dry-run",
        needles=("max-epsilon",),
    ),
    fl("supernode", "--data", "synthetic", "--delta", "2", "--dry-run", needles=("delta",)),
    fl(
        "supernode",
        "--data",
        "synthetic",
        "--noise-seed",
        "-1",
        "--dry-run",
        needles=("noise-seed",),
    ),
    fl("superlink", "--port", "70000", "--dry-run", needles=("--port", "65535")),
    # --- output paths --------------------------------------------------------------------------
    Kind(
        "extract --out is a folder",
        lambda tmp: _extract(tmp, _existing_folder(tmp)),
        ("--out", "is a folder", "cohort.csv"),
    ),
    Kind(
        "extract --out under a file",
        lambda tmp: _extract(tmp, _under_a_file(tmp)),
        ("--out", "plain.txt"),
    ),
    Kind(
        "run --out is a file",
        lambda tmp: [*run_args(tmp), "--out", str(tmp / "cohort.csv")],
        ("--out", "is a file"),
    ),
    Kind(
        "run --out under a file",
        lambda tmp: [*run_args(tmp), "--out", str(_under_a_file(tmp))],
        ("--out",),
    ),
    Kind(
        "synth --out is a file",
        lambda tmp: ["data", "synth", "--stays", "50", "--out", str(_under_a_file(tmp).parent)],
        ("--out",),
    ),
    Kind("report of a folder without results", lambda tmp: ["report", str(tmp)], ("results.json",)),
    Kind(
        "fl run --out is a file",
        lambda tmp: ["fl", "run", "--out", str(_under_a_file(tmp).parent)],
        ("--out", "is a file"),
    ),
    Kind(
        "data synth --seed -1",
        lambda tmp: ["data", "synth", "--out", str(tmp / "t"), "--seed", "-1"],
        ("--seed",),
    ),
    Kind(
        "data synth --stays too many",
        lambda tmp: ["data", "synth", "--out", str(tmp / "t"), "--stays", "99999999999"],
        ("--stays", "10,000,000"),
    ),
    Kind(
        "resume a folder without a config",
        lambda tmp: [*run_args(tmp), "--resume", str(tmp)],
        ("--resume",),
    ),
]


@pytest.mark.parametrize("kind", KINDS, ids=[kind.name for kind in KINDS])
def test_bad_input_is_one_error_line(tmp_path: Path, kind: Kind):
    result = CliRunner().invoke(app, kind.args(tmp_path))
    output = result.output  # stdout and stderr together
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), f"uncaught {result.exception!r}"
    assert result.exit_code == BAD_INPUT_EXIT, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert "internal error" not in errors[0], output
    for needle in kind.needles:
        assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"
    for secret in SECRETS:
        assert secret not in output, f"a cell value ({secret}) was printed:\n{output}"
    if kind.at_door:
        assert [line for line in output.splitlines() if line.strip()] == errors, output
        assert not (tmp_path / "runs").exists()


def test_there_are_many_kinds():
    assert len(KINDS) >= 40


# --- odd but usable data: accepted, with a note that gives counts only -----------------------


def _extract_ok(tmp_path: Path, frame: pd.DataFrame, *extra: str) -> tuple[str, pd.DataFrame]:
    data = write_csv(tmp_path / "cohort.csv", frame)
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(
        app,
        [
            "data",
            "extract",
            "--data",
            data,
            "--target",
            "y",
            "--out",
            str(out),
            "--unit-column",
            "pid",
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "error:" not in result.output
    return result.output, pd.read_csv(out)


def test_infinite_values_become_missing_with_a_count(tmp_path: Path):
    frame = table()
    frame.loc[[0, 5, 9], "age"] = [np.inf, -np.inf, np.inf]
    output, written = _extract_ok(tmp_path, frame)
    assert "'age': 3 infinite values treated as missing" in output
    assert written["age"].isna().sum() == 3 and np.isfinite(written["age"].dropna()).all()
    for secret in SECRETS:
        assert secret not in output


@pytest.mark.parametrize("ids", ["text", "numbers"])
def test_rows_without_a_unit_id_are_dropped_never_merged(tmp_path: Path, ids: str):
    frame = table()
    if ids == "numbers":
        frame["pid"] = np.arange(len(frame)) + 55501.0
    frame.loc[[3, 4, 7], "pid"] = np.nan
    frame.loc[8, "pid"] = "   " if ids == "text" else np.nan
    output, written = _extract_ok(tmp_path, frame, "--unit-column", "pid")
    assert "4 rows without a 'pid' value dropped" in output
    assert len(written) == len(frame) - 4 and written["unit_id"].notna().all()
    assert written["unit_id"].is_unique  # nothing merged into one giant unit
    for secret in SECRETS:
        assert secret not in output


def test_rows_without_a_site_are_dropped_with_a_count(tmp_path: Path):
    frame = table()
    frame.loc[[2, 6], "site"] = np.nan
    output, written = _extract_ok(tmp_path, frame, "--site-column", "site")
    assert "2 rows without a 'site' value dropped" in output
    assert len(written) == len(frame) - 2 and set(written["site_id"]) == {"north", "south"}
