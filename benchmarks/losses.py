"""Forward+backward time and peak extra memory of the fused losses against PyTorch baselines, in one process.

    python -m benchmarks.losses --output-dir benchmarks                # results.md, the charts (make bench)
    python -m benchmarks.losses --only apl,linear --output-dir /tmp/b  # some groups only
    python -m benchmarks.losses --quick --output-dir /tmp/bench        # tiny shapes, a smoke test

Groups: ``el`` (EL/CEL against ``F.cross_entropy`` and the plain formula under ``torch.compile``), ``apl`` (APL
against ``F.binary_cross_entropy_with_logits`` and the compiled plain formula), ``linear`` (a 512 -> 64000 head:
``h @ W.T`` + CE/EL, torch's chunked ``F.linear_cross_entropy``, hf_losses' fused ``linear_encouraging_loss``)
and ``vocab`` (a 250k-class row, and peak memory against the vocabulary size, 32k to 256k, in its own chart).

Time: median of ``torch.utils.benchmark.Timer.blocked_autorange`` with all threads (``--threads``); the cases
that share a baseline are timed in turn, up to ``--rounds`` times, and each keeps its fastest round. Before
that, one warm-up call per case, reported as "first call" (for ``torch.compile`` rows it includes the
compilation, from a reset compiler and an empty on-disk compile cache). Memory (CPU): the rise of the peak
resident set over one forward+backward after the warm-up, in a child process (benchmarks/harness.py); on
CUDA, max_memory_allocated. Both include the gradients. Ratios are against the first row of each group (the PyTorch baseline).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils import benchmark

from benchmarks.harness import command_line, peak_rise_mib, run_child
from hf_losses import asymmetric_polynomial_loss, encouraging_loss

try:
    from hf_losses.losses.linear import linear_encouraging_loss
except ImportError:  # the fused head is not in this version
    linear_encouraging_loss = None

GROUPS = ("el", "apl", "linear", "vocab")
VOCAB_SIZES = (32000, 64000, 128000, 256000)


def plain_encouraging(z, y, *, log_end, label_smoothing):
    """The authors' formula written plainly: log_softmax, exp, log of the clamped 1 - p, where, gather."""
    logp = F.log_softmax(z.float(), dim=-1)
    p = logp.exp()
    bonus = torch.log(torch.clamp(1.0 - p, min=1e-5))
    if log_end < 1:
        bonus = torch.where(p > log_end, math.log(1 - log_end) - (p - log_end) / (1 - log_end), bonus)
    per_class = bonus - logp
    target = per_class.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    smooth = per_class.mean(-1)
    return ((1 - label_smoothing) * target + label_smoothing * smooth).mean()


def plain_polynomial(x, t, *, gamma_neg=4.0, clip=0.05, alpha1=-1.0, alpha2=1.25):
    """APL written plainly with sigmoid, clamp, log and pow (default settings, gamma_pos = 0)."""
    p = torch.sigmoid(x.float())
    q = 1 - p
    pos = -torch.log(p.clamp(min=1e-8)) + alpha1 * q + alpha2 * q * q
    p_m = (p - clip).clamp(min=0)
    neg = -torch.log((1 - p_m).clamp(min=1e-8)) * torch.pow(p_m, gamma_neg).detach()
    return (t * pos + (1 - t) * neg).mean()


@dataclass
class Case:
    group: str  # a table group; its first case is the baseline of the others
    name: str
    shape: tuple[int, ...]  # (rows, classes), or (tokens, d, vocabulary) for a linear head
    dtype: torch.dtype
    fn: Callable[..., torch.Tensor]
    kind: str  # "classes" (integer targets), "multilabel" (0/1 targets) or "linear" (h, W, integer targets)
    compiled: bool = False  # reset the compiler cache before the first call

    @property
    def label(self) -> str:
        return f"{self.group}|{self.name}|{self.shape}|{self.dtype}"


def compiled(fn: Callable, **kwargs) -> Callable:
    """`fn` with fixed keyword arguments under torch.compile (each row gets its own compilation)."""
    return torch.compile(lambda *args: fn(*args, **kwargs))


def el_cases(
    rows: int,
    vocab: int,
    dtype: torch.dtype,
    eps: float,
    log_end: float,
    with_plain: bool,
    bonus: str = "log",
):
    group = f"EL LS={eps:g} LE={log_end:g}" if bonus == "log" else f"EL {bonus} LS={eps:g}"
    shape = (rows, vocab)
    cases = [
        Case(
            group,
            f"F.cross_entropy(ls={eps:g})",
            shape,
            dtype,
            lambda z, y: F.cross_entropy(z, y, label_smoothing=eps),
            "classes",
        ),
        Case(
            group,
            "hf_losses encouraging_loss",
            shape,
            dtype,
            lambda z, y: encouraging_loss(z, y, log_end=log_end, label_smoothing=eps, bonus=bonus),
            "classes",
        ),
    ]
    if with_plain:
        fn = compiled(plain_encouraging, log_end=log_end, label_smoothing=eps)
        cases.append(Case(group, "plain formula + torch.compile", shape, dtype, fn, "classes", compiled=True))
    return cases


def apl_cases(rows: int, cols: int, with_plain: bool) -> list[Case]:
    group, shape, f32 = "APL (defaults)", (rows, cols), torch.float32
    cases = [
        Case(
            group,
            "F.binary_cross_entropy_with_logits",
            shape,
            f32,
            F.binary_cross_entropy_with_logits,
            "multilabel",
        ),
        Case(
            group,
            "hf_losses asymmetric_polynomial_loss",
            shape,
            f32,
            asymmetric_polynomial_loss,
            "multilabel",
            True,
        ),
    ]
    if with_plain:
        cases.append(
            Case(
                group,
                "plain formula + torch.compile",
                shape,
                f32,
                compiled(plain_polynomial),
                "multilabel",
                True,
            )
        )
    return cases


def linear_cases(tokens: int, dim: int, vocab: int, eps: float, *, torch_chunked: bool) -> list[Case]:
    """A head h [tokens, d] -> W [V, d]: the unfused baseline, hf_losses' fused EL (LE 0.5), torch's chunked CE."""
    group, shape, f32 = f"linear LS={eps:g}", (tokens, dim, vocab), torch.float32
    cases = [
        Case(
            group,
            f"h @ W.T + F.cross_entropy(ls={eps:g})",
            shape,
            f32,
            lambda h, w, y: F.cross_entropy(h @ w.T, y, label_smoothing=eps),
            "linear",
        ),
        Case(
            group,
            "h @ W.T + hf_losses encouraging_loss (LE 0.5)",
            shape,
            f32,
            lambda h, w, y: encouraging_loss(h @ w.T, y, log_end=0.5, label_smoothing=eps),
            "linear",
        ),
    ]
    if linear_encouraging_loss is not None:
        cases.append(
            Case(
                group,
                "hf_losses linear_encouraging_loss (LE 0.5)",
                shape,
                f32,
                lambda h, w, y: linear_encouraging_loss(h, w, y, log_end=0.5, label_smoothing=eps),
                "linear",
            )
        )
    if torch_chunked and hasattr(F, "linear_cross_entropy"):
        options = torch.nn.LinearCrossEntropyOptions()
        cases.append(
            Case(
                group,
                f"torch F.linear_cross_entropy chunked (ls={eps:g})",
                shape,
                f32,
                lambda h, w, y: F.linear_cross_entropy(h, w, y, label_smoothing=eps, options=options),
                "linear",
            )
        )
    return cases


def vocab_chart_cases(tokens: int, dim: int, vocab: int) -> list[Case]:
    """What the memory chart compares at one vocabulary size (LS 0.1, LE 0.5)."""
    cases = [c for c in linear_cases(tokens, dim, vocab, 0.1, torch_chunked=False)]
    for case in cases:
        case.group = "memory vs vocabulary"
    return cases


def all_cases(quick: bool, groups: tuple[str, ...] = GROUPS) -> tuple[list[Case], float]:
    """The benchmark's timed cases for the chosen groups and its default seconds of timing per row."""
    cases = []
    plain = not quick  # compiling the plain formulas takes minutes: not in the smoke test
    if "el" in groups:
        rows, vocab = (64, 1000) if quick else (4096, 32000)
        for dtype, eps, log_end in (
            (torch.float32, 0.0, 0.5),
            (torch.float32, 0.1, 1.0),
            (torch.bfloat16, 0.1, 0.5),
        ):
            cases += el_cases(rows, vocab, dtype, eps, log_end, plain)
        for bonus in ("power", "cosine"):
            for dtype in (torch.float32, torch.bfloat16):
                cases += el_cases(rows, vocab, dtype, 0.1, 1.0, with_plain=False, bonus=bonus)
    if "apl" in groups:
        for rows, cols in [(256, 64)] if quick else [(8192, 512), (2048, 4000)]:
            cases += apl_cases(rows, cols, plain)
    if "linear" in groups:
        tokens, dim, vocab = (64, 32, 1000) if quick else (4096, 512, 64000)
        for eps in (0.1, 0.0):
            cases += linear_cases(tokens, dim, vocab, eps, torch_chunked=eps == 0.0)
    if "vocab" in groups:
        rows = 16 if quick else 512
        cases += el_cases(rows, 250054, torch.float32, 0.1, 0.5, with_plain=False)
    return cases, 0.05 if quick else 1.0


def chart_cases(quick: bool) -> list[Case]:
    """The memory-against-vocabulary cases: 512 tokens x d 512 -> V (64 x 32 -> V in quick mode)."""
    tokens, dim, sizes = (64, 32, (1000, 2000)) if quick else (512, 512, VOCAB_SIZES)
    return [c for vocab in sizes for c in vocab_chart_cases(tokens, dim, vocab)]


def make_inputs(case: Case, device: torch.device) -> tuple[list[torch.Tensor], tuple[torch.Tensor, ...]]:
    """The leaves whose gradients are computed and the arguments of `case.fn`."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    if case.kind == "linear":
        tokens, dim, vocab = case.shape
        h = torch.randn(tokens, dim, generator=gen).to(device=device, dtype=case.dtype).requires_grad_()
        w = (torch.randn(vocab, dim, generator=gen) * dim**-0.5).to(device=device, dtype=case.dtype)
        w.requires_grad_()
        y = torch.randint(0, vocab, (tokens,), generator=gen).to(device)
        return [h, w], (h, w, y)
    rows, cols = case.shape
    x = (torch.randn(rows, cols, generator=gen) * 2).to(device=device, dtype=case.dtype).requires_grad_()
    if case.kind == "classes":
        target = torch.randint(0, cols, (rows,), generator=gen).to(device)
    else:
        target = (torch.rand(rows, cols, generator=gen) < 0.05).float().to(device)
    return [x], (x, target)


def fwd_bwd(case: Case, leaves: list[torch.Tensor], args: tuple[torch.Tensor, ...]) -> None:
    for leaf in leaves:
        leaf.grad = None
    case.fn(*args).backward()


def first_call(case: Case, leaves, args) -> float:
    """Seconds of the warm-up call (with the compilation for compiled cases)."""
    start = time.perf_counter()
    fwd_bwd(case, leaves, args)
    return time.perf_counter() - start


def peak_extra_mib(case: Case, leaves, args, device: torch.device) -> float:
    """Peak memory above the inputs during one forward+backward, in MiB."""
    for leaf in leaves:
        leaf.grad = None
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fwd_bwd(case, leaves, args)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    return peak_rise_mib(lambda: fwd_bwd(case, leaves, args))


def _peak_of(case: Case, device: torch.device) -> float:
    if case.compiled:
        torch._dynamo.reset()
    leaves, args = make_inputs(case, device)
    first_call(case, leaves, args)
    return peak_extra_mib(case, leaves, args, device)


def measure_memory(cases: list[Case], device: torch.device, quick: bool) -> list[float]:
    """Peak extra MiB per case; on CPU in a child process (benchmarks/harness.py)."""
    if device.type == "cuda":
        return [_peak_of(case, device) for case in cases]
    request = {"quick": quick, "labels": [c.label for c in cases]}
    threads = ["--threads", str(torch.get_num_threads())]
    return run_child(__spec__.name, [*threads, "--memory-of", json.dumps(request)])


def blocks(cases: list[Case]) -> list[list[Case]]:
    """Consecutive cases that share a baseline (group, shape, dtype)."""
    out: list[list[Case]] = []
    for case in cases:
        if out and (out[-1][0].group, out[-1][0].shape, out[-1][0].dtype) == (
            case.group,
            case.shape,
            case.dtype,
        ):
            out[-1].append(case)
        else:
            out.append([case])
    return out


def time_block(
    block: list[Case], device: torch.device, min_run_time: float, rounds: int
) -> list[tuple[float, float]]:
    """(first call s, fwd+bwd s) per case; the cases are timed in turn, `rounds` times while a round is short,
    and the fastest round's median is kept, so a burst of load from elsewhere hits every case alike."""
    if any(case.compiled for case in block):
        torch._dynamo.reset()
    inputs = [make_inputs(case, device) for case in block]
    firsts = [first_call(case, *inp) for case, inp in zip(block, inputs, strict=True)]
    best = [math.inf] * len(block)
    for _ in range(rounds):
        start = time.perf_counter()
        for i, (case, (leaves, args)) in enumerate(zip(block, inputs, strict=True)):
            timer = benchmark.Timer(
                stmt="fwd_bwd(case, leaves, args)",
                globals={"fwd_bwd": fwd_bwd, "case": case, "leaves": leaves, "args": args},
                num_threads=torch.get_num_threads(),
            )
            best[i] = min(best[i], timer.blocked_autorange(min_run_time=min_run_time).median)
        if time.perf_counter() - start > 30:  # slow cases: one round is enough and all there is time for
            break
    return list(zip(firsts, best, strict=True))


def run(cases: list[Case], device: torch.device, min_run_time: float, quick: bool, rounds: int) -> list[dict]:
    rows = []
    memories = iter(measure_memory(cases, device, quick))
    for block in blocks(cases):
        for case, (first, seconds) in zip(
            block, time_block(block, device, min_run_time, rounds), strict=True
        ):
            memory = next(memories)
            rows.append(
                {
                    "group": case.group,
                    "name": case.name,
                    "shape": case.shape,
                    "dtype": str(case.dtype).removeprefix("torch."),
                    "first_s": first,
                    "ms": seconds * 1e3,
                    "mib": memory,
                }
            )
            print(
                f"{case.group:>18} | {str(case.shape):>18} {rows[-1]['dtype']:>8} | {case.name:<46} "
                f"first {first:7.2f} s {rows[-1]['ms']:9.1f} ms {memory:8.1f} MiB",
                flush=True,
            )
    return rows


def add_ratios(rows: list[dict]) -> None:
    base = None
    for row in rows:
        key = (row["group"], row["shape"], row["dtype"])
        if base is None or base[0] != key:
            base = (key, row)
        row["time_ratio"] = row["ms"] / base[1]["ms"]
        row["mem_ratio"] = row["mib"] / base[1]["mib"] if base[1]["mib"] > 0 else float("nan")


def shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) if len(shape) == 2 else f"{shape[0]}x{shape[1]} -> {shape[2]}"


def markdown(rows: list[dict], chart_rows: list[dict], header: str) -> str:
    lines = [
        header,
        "",
        "| loss | shape | dtype | implementation | first call s | fwd+bwd ms | x baseline | peak extra MiB "
        "| x baseline |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['group']} | {shape_text(r['shape'])} | {r['dtype']} | {r['name']} | {r['first_s']:.2f} | "
            f"{r['ms']:.1f} | {r['time_ratio']:.2f} | {r['mib']:.0f} | {r['mem_ratio']:.2f} |"
        )
    if chart_rows:
        names = list(dict.fromkeys(r["name"] for r in chart_rows))
        shapes = list(dict.fromkeys(r["shape"] for r in chart_rows))
        mib = {(r["name"], r["shape"]): r["mib"] for r in chart_rows}
        lines += [
            "",
            "Peak extra memory (MiB) of one forward+backward against the vocabulary size "
            f"({shapes[0][0]} tokens x d {shapes[0][1]}, LS 0.1):",
            "",
            "| implementation | " + " | ".join(f"V={s[2]}" for s in shapes) + " |",
            "|---|" + "---:|" * len(shapes),
        ]
        for name in names:
            lines.append(f"| {name} | " + " | ".join(f"{mib[(name, s)]:.0f}" for s in shapes) + " |")
    return "\n".join(lines) + "\n"


def ratio_chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['group']} {shape_text(r['shape'])} {r['dtype']}\n{r['name']}" for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(14, 0.42 * len(rows) + 1.5), sharey=True)
    for ax, key, title in (
        (axes[0], "time_ratio", "time / baseline"),
        (axes[1], "mem_ratio", "peak memory / baseline"),
    ):
        ax.barh(
            range(len(rows)),
            [r[key] for r in rows],
            color=["tab:gray" if r[key] == 1 else "tab:blue" for r in rows],
        )
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_title(title)
    axes[0].set_yticks(range(len(rows)), labels, fontsize=7)
    axes[0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def memory_chart(chart_rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in dict.fromkeys(r["name"] for r in chart_rows):
        points = [(r["shape"][2], r["mib"]) for r in chart_rows if r["name"] == name]
        ax.plot([v for v, _ in points], [m for _, m in points], marker="o", label=name)
    tokens, dim = chart_rows[0]["shape"][:2]
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("vocabulary size V")
    ax.set_ylabel("peak extra memory of fwd+bwd (MiB)")
    ax.set_title(f"{tokens} tokens x d {dim} -> V, fp32, LS 0.1")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_groups(text: str) -> tuple[str, ...]:
    groups = tuple(g.strip() for g in text.split(",") if g.strip())
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or not groups:
        raise argparse.ArgumentTypeError(f"--only takes a comma-separated subset of {','.join(GROUPS)}")
    return groups


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output-dir", type=Path, default=Path("benchmarks"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny shapes: a smoke test, not a measurement")
    parser.add_argument(
        "--only", type=parse_groups, default=GROUPS, help=f"groups to run: {','.join(GROUPS)}"
    )
    parser.add_argument(
        "--match",
        default="",
        help="keep only the rows whose group contains one of these comma-separated texts (e.g. 'power,LE=1')",
    )
    parser.add_argument("--no-compiled", action="store_true", help="leave out the torch.compile rows")
    parser.add_argument("--min-run-time", type=float, default=None, help="seconds of timing per row")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="intra-op threads (default: all; 1 is steadier on a busy machine)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="timing rounds over each group's cases (fastest kept)"
    )
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)  # internal: the memory-measuring child process
    args = parser.parse_args(argv)

    # an empty compile cache per process: "first call" is then the cold compilation a new user pays
    cache_dir = tempfile.mkdtemp(prefix="hf-losses-bench-inductor-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
    try:
        measure(args, sys.argv[1:] if argv is None else argv)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)


def measure(args: argparse.Namespace, argv: list[str]) -> None:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_of:
        request = json.loads(args.memory_of)
        known = all_cases(request["quick"])[0] + chart_cases(request["quick"])
        by_label = {c.label: c for c in known}
        print(json.dumps([_peak_of(by_label[label], device) for label in request["labels"]]))
        return
    cases, min_run_time = all_cases(args.quick, args.only)
    if args.match:
        wanted = [text.strip() for text in args.match.split(",") if text.strip()]
        cases = [case for case in cases if any(text in case.group for text in wanted)]
    if args.no_compiled:
        cases = [case for case in cases if not case.compiled]
    rows = run(cases, device, args.min_run_time or min_run_time, args.quick, args.rounds)
    add_ratios(rows)
    chart_rows = []
    if "vocab" in args.only:
        chart = chart_cases(args.quick)
        chart_rows = [
            {"name": c.name, "shape": c.shape, "mib": mib}
            for c, mib in zip(chart, measure_memory(chart, device, args.quick), strict=True)
        ]

    command = command_line(__spec__.name, argv)
    device_name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    )
    header = (
        f"Command: `{command.strip()}` on {device_name}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads."
    )
    args.output_dir.mkdir(parents=True, exist_ok=True)
    table = markdown(rows, chart_rows, header)
    (args.output_dir / "results.md").write_text(table)
    written = [args.output_dir / "results.md"]
    if rows:
        ratio_chart(rows, args.output_dir / "results.png")
        written.append(args.output_dir / "results.png")
    if chart_rows:
        memory_chart(chart_rows, args.output_dir / "memory_vs_vocab.png")
        written.append(args.output_dir / "memory_vs_vocab.png")
    print("\n" + table)
    print("wrote " + ", ".join(map(str, written)))


if __name__ == "__main__":
    main()
