"""Every named set mathtune knows: hub sets with their train and test splits, and the reasoning-gym tasks.

The bottom layer of the data code: it imports nothing from ``mathtune.data`` or ``mathtune.evaluate``, so the loaders
(``data.hub``, ``data.local``, ``data.generators``) and the benchmark registry (``evaluate.benchmarks``) all read
their names from here without importing one another in a circle.

Hub sets: one ``NamedSet`` per dataset, whichever side uses it. ``gsm8k`` is one entry with a ``train`` split (a
training source) and a ``test`` split (a benchmark); ``math500``, ``cmath`` and ``svamp`` are benchmarks only, the
ms-swift sets (ruozhiba, blossom-math-v2, ...) training sources only. A local copy of either split is read by one
reader (``mathtune.data.local``), which takes from a cloned repository folder only the files of the wanted split.

reasoning-gym tasks: ``rg:TASK`` trains on the task's generated stream and evaluates on its held-out pool. A task
with a structural split also has an unseen benchmark, ``rg:TASK-unseen``, drawn only from structures its training
rows never come from:

- ``gsm-symbolic``: each item comes from one of gsm_symbolic's template generators (``GSMSymbolicDataset
  .task_indices``; reasoning-gym 0.1.25 draws from 85 of its ids 0-99). The held-out templates are the ids that are
  multiples of 5: 0, 5, 10, 15, 20, 25, 30, 40, 45, 50, 55, 60, 70, 75, 80, 85, 95 (17 of the 85 drawn, 20%; 35, 65
  and 90 are never drawn). ``rg:gsm-symbolic`` trains and evaluates on the other 68 templates (new questions from
  seen templates); ``rg:gsm-symbolic-unseen`` asks only held-out templates. Unseen benchmarks are not training
  sources.

The other tasks have no held-out structure yet: their natural axes (arithmetic's number of terms, equations' terms,
propositional_logic's variables) are difficulty settings, so holding one value out would measure extrapolation to
harder items rather than transfer to unseen problem shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

from mathtune.errors import UserError

GENERATOR_PREFIX = "rg:"
UNSEEN_SUFFIX = "-unseen"


@dataclass(frozen=True)
class NamedSet:
    """A dataset known by name, with where it lives and which of its splits mathtune reads."""

    name: str
    """The name used in --dataset and --benchmarks (and in reports)."""
    hf_id: str | None
    """Hugging Face dataset id, loaded with `datasets.load_dataset`."""
    ms_id: str | None = None
    """ModelScope dataset id, loaded with the `modelscope` client when it is installed."""
    subsets: tuple[str | None, ...] = (None,)
    """Configs to load and concatenate, in order; None is the default config."""
    train: str | None = None
    """The split read as a training source (--dataset NAME); None: not a training source."""
    test: str | None = None
    """The split read as a benchmark (--benchmarks NAME); None: not a benchmark."""
    aliases: tuple[str, ...] = ()
    """Other names accepted for it, case-insensitively."""
    about: str = ""
    """One line for `mathtune data list`."""
    language: str = "en"
    """The language of its questions: "en" or "zh" (picks the evaluation prompt)."""
    test_fields: tuple[str, ...] = ()
    """Columns every test row needs."""


NAMED_SETS: tuple[NamedSet, ...] = (
    NamedSet(
        "ruozhiba",
        hf_id=None,
        ms_id="AI-ModelScope/ruozhiba",
        subsets=("post-annual", "title-good", "title-norm"),
        train="train",
        aliases=("AI-ModelScope/ruozhiba",),
        about="Chinese joke titles as response-only rows (ModelScope only, as in ms-swift)",
        language="zh",
    ),
    NamedSet(
        "LooksJuicy/ruozhiba",
        hf_id="LooksJuicy/ruozhiba",
        train="train",
        aliases=("ruozhiba-qa",),
        about="ruozhiba questions with answers (instruction, output)",
        language="zh",
    ),
    NamedSet(
        "AI-ModelScope/blossom-math-v2",
        hf_id="Azure99/blossom-math-v2",
        ms_id="AI-ModelScope/blossom-math-v2",
        train="train",
        aliases=("blossom-math-zh", "blossom-math-v2", "Azure99/blossom-math-v2"),
        about="10k Chinese/English math word problems; response = output + Answer line",
    ),
    NamedSet(
        "haijian06/Advanced-Math",
        hf_id="haijian06/Advanced-Math",
        train="train",
        aliases=("HJ_math", "advanced-math"),
        about="the tutorial's HJ_math.jsonl (advanced math, linear algebra, probability); row shape detected",
    ),
    NamedSet(
        "gsm8k",
        hf_id="openai/gsm8k",
        ms_id="modelscope/gsm8k",
        subsets=("main",),
        train="train",
        test="test",
        aliases=("openai/gsm8k",),
        about="GSM8K train split (question, answer with its #### line); its test split is the gsm8k benchmark",
        test_fields=("question", "answer"),
    ),
    NamedSet(
        "math500",
        hf_id="HuggingFaceH4/MATH-500",
        test="test",
        about="500 MATH competition problems (problem, answer)",
        test_fields=("problem", "answer"),
    ),
    NamedSet(
        "cmath",
        hf_id="weitianwen/cmath",
        test="test",
        about="1098 Chinese elementary-school word problems (question, golden)",
        language="zh",
        test_fields=("question", "golden"),
    ),
    NamedSet(
        "svamp",
        hf_id="ChilleD/SVAMP",
        test="test",
        about="300 varied one-step word problems (Body, Question, Answer)",
        test_fields=("Body", "Question", "Answer"),
    ),
)


def find_set(name: str, split: str) -> NamedSet | None:
    """The named set called `name` (or an alias), case-insensitively, that has a `split` ("train" or "test")."""
    key = name.strip().lower()
    for named in NAMED_SETS:
        if getattr(named, split) is not None and key in (named.name.lower(), *(a.lower() for a in named.aliases)):
            return named
    return None


def training_sets() -> list[NamedSet]:
    """The named sets usable as --dataset sources."""
    return [named for named in NAMED_SETS if named.train is not None]


def test_sets() -> list[NamedSet]:
    """The named sets usable as benchmarks."""
    return [named for named in NAMED_SETS if named.test is not None]


# ---- reasoning-gym tasks ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RgTask:
    """A built-in generated task and the structures its training rows never come from."""

    name: str
    """The user-facing name, addressed as rg:NAME."""
    rg_name: str
    """The reasoning-gym dataset name."""
    held_out: frozenset[int] = frozenset()
    """Structure ids kept for rg:NAME-unseen (gsm_symbolic: template ids; propositional_logic: the number of
    variables); empty: the task has no unseen split."""
    config: tuple[tuple[str, int], ...] = ()
    """reasoning-gym config overrides, as (name, value) pairs (hashable)."""


GSM_SYMBOLIC_HELD_OUT = frozenset(range(0, 100, 5))
"""gsm_symbolic template ids held out of training: multiples of 5 (17 of the 85 ids 0.1.25 draws from)."""

PROPOSITIONAL_LOGIC_HELD_OUT = frozenset({4})
"""propositional_logic problems with 4 variables, the most its generator draws (2-4, about a third each), held out
of training: rg:propositional_logic-unseen asks whether what was learned on 2-3 variables carries to more (problem
size). The other generators have no split yet. Those in the default recipe's measured mix (arithmetic, leg_counting,
products, gcd, lcm, prime_factorization, count_bits), in a measured untrained-task check (equations, chain_sum) or
the CPU quickstart's task (number_sequence) keep their pools, whose figures a split would change; knights_knaves is
drawn at one size (2 people); syllogism (its quantifier kinds) and fractions (value size) could be split next."""

RG_TASKS: dict[str, RgTask] = {
    task.name: task
    for task in (
        RgTask("gsm-symbolic", "gsm_symbolic", GSM_SYMBOLIC_HELD_OUT),
        RgTask("arithmetic", "basic_arithmetic"),
        RgTask("equations", "simple_equations"),
        RgTask("fractions", "fraction_simplification"),
        RgTask("knights_knaves", "knights_knaves"),
        RgTask("syllogism", "syllogism"),
        RgTask("propositional_logic", "propositional_logic", PROPOSITIONAL_LOGIC_HELD_OUT),
        # Short-answer tasks a 135M model learns in CPU minutes (the quickstart's task and its untrained-task check;
        # docs/results.md, "Quickstart task"): next term of a number sequence, and sums of 2-3 one-digit numbers.
        RgTask("number_sequence", "number_sequence"),
        RgTask("chain_sum", "chain_sum",
               config=(("min_terms", 2), ("max_terms", 3), ("min_digits", 1), ("max_digits", 1))),
        # Arithmetic and word-problem skills GSM-style problems are made of, each with a worked reply, for mixing
        # into gsm-symbolic (the diversity lever: transfer to unseen templates needs more than templates).
        # Sizes keep the steps within a 135M model's reach and leave each question space well over the 1,000-item
        # eval pool plus thousands of training rows (prime_factorization up to 1,000 would have 999 questions).
        RgTask("leg_counting", "leg_counting",
               config=(("min_animals", 2), ("max_animals", 4), ("min_instances", 1), ("max_instances", 10))),
        RgTask("products", "products", config=(("min_digits", 1), ("max_digits", 2))),
        RgTask("gcd", "gcd", config=(("max_value", 1000),)),
        RgTask("lcm", "lcm", config=(("max_value", 100),)),
        RgTask("prime_factorization", "prime_factorization", config=(("max_value", 5000),)),
        RgTask("count_bits", "count_bits", config=(("max_n", 65535),)),
    )
}


def rg_task(name: str) -> str:
    """The registered spelling of a task name or its reasoning-gym name; hyphens and underscores are interchangeable."""
    wanted = name.strip().lower().replace("-", "_")
    for task in RG_TASKS.values():
        if wanted in (task.name.replace("-", "_"), task.rg_name):
            return task.name
    raise _unknown_task(name)


def rg_benchmark(name: str) -> tuple[str, bool]:
    """(task, unseen) for a benchmark task name after "rg:": "gsm-symbolic-unseen" -> ("gsm-symbolic", True)."""
    wanted = name.strip().lower().replace("_", "-")
    if wanted.endswith(UNSEEN_SUFFIX):
        try:
            task = rg_task(wanted[: -len(UNSEEN_SUFFIX)])
        except UserError:
            raise _unknown_task(name) from None
        if RG_TASKS[task].held_out:
            return task, True
        with_unseen = ", ".join(t.name for t in RG_TASKS.values() if t.held_out)
        raise _unknown_task(name, f"unseen splits exist only for {with_unseen}")
    return rg_task(name), False


def _unknown_task(name: str, why: str = "") -> UserError:
    known = f"known tasks: {', '.join(RG_TASKS)}"
    return UserError(f"unknown task '{name}'; {why or known}")


def benchmark_names() -> list[str]:
    """Every benchmark name: the rg tasks (each followed by its unseen split), champ, then the hub test sets."""
    rg = []
    for task in RG_TASKS.values():
        rg.append(f"{GENERATOR_PREFIX}{task.name}")
        if task.held_out:
            rg.append(f"{GENERATOR_PREFIX}{task.name}{UNSEEN_SUFFIX}")
    return [*rg, "champ", *(named.name for named in test_sets())]
