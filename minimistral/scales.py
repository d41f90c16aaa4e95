"""One dial for scale: every stage's settings at ``ci`` (what CI runs, minutes) and ``default`` (the reported run).

The paper's budgets are trillions of tokens; ours fit a 2-core CPU. Every stage reads its own part
of one :class:`Scale` (``get_scale("default").cascade``), so the whole reproduction changes size
in one place, and this file shows every knob of every stage side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

from minimistral.arch.config import TINY_WINDOW

LONG_FACTOR = 4  # YaRN factor of the tiny children: the 256-token window -> 1,024 tokens (the real x16)


@dataclass(frozen=True)
class PretrainScale:
    """The parent's pretraining (paper §3). ``seq_len`` is the parent's context window."""

    steps: int
    batch_size: int = 16
    seq_len: int = TINY_WINDOW
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 40
    eval_every: int = 50
    ckpt_every: int = 50
    log_every: int = 10  # steps per line of metrics.jsonl (a mean over them)
    eval_windows: int | None = None  # per source in the final report; None = the whole validation split
    sample_tokens: int = 80
    compile: bool = False  # torch.compile + fused AdamW where it works (train.compile_problem says where not)


@dataclass(frozen=True)
class PruneStudyScale:
    """Every pruning heuristic and baseline measured on the parent (paper §3.1, Algorithm 2)."""

    calib_windows: int  # training windows for calibration
    val_per_source: int  # held-out windows per source for the loss
    points: int  # sizes per dimension in the ratio sweep
    batch_size: int = 16


@dataclass(frozen=True)
class CascadeScale:
    """Steps and batch shapes of every cascade stage (paper §3.1, Algorithm 1).

    A short step (``batch_size`` windows of 256 tokens) and a long step (``long_batch_size``
    windows of 1,024) see the same number of tokens.
    """

    short_steps: int
    long_steps: int
    batch_size: int = 16
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 10
    long_lr: float = 5e-4
    calib_windows: int = 32  # training windows that calibrate each prune
    eval_every: int = 25
    eval_batches: int = 4
    ckpt_every: int = 25
    kd_temperature: float = 1.0  # not given by the paper
    claim_seeds: int = 1  # seeds of the claims whose gaps are small (KD vs KD + NTP)
    compile: bool = False  # torch.compile the student where it works

    @property
    def long_batch_size(self) -> int:
        return max(1, self.batch_size // LONG_FACTOR)


@dataclass(frozen=True)
class LongScale:
    """How much the long-context measurements read: long windows for the bucket loss, the passkey grid."""

    windows: int = 16
    bucket: int = 128
    lengths: tuple[int, ...] = (128, 256, 512, 1024)
    depths: tuple[float, ...] = (0.0, 1 / 3, 2 / 3, 1.0)
    passkeys: int = 8


@dataclass(frozen=True)
class VisionScale:
    """Image understanding (paper §2): the parent's new encoder and projector, each child's projector, the study.

    Scenes of real digits (``vision.data``): ``train_scenes`` x 4 questions to train on, ``test_scenes``
    x 4 held out (other source images). The ablations run on tiny-3b over ``seeds`` seeds.
    """

    train_scenes: int
    test_scenes: int
    align_steps: int  # the parent's new encoder and projector, aligned to its output head
    parent_steps: int  # the parent on the image questions
    child_steps: int  # each child's projector (and language model), distilled from the parent
    align_batch_size: int = 64
    batch_size: int = 32
    align_lr: float = 3e-3
    lr: float = 1e-3
    lm_lr_scale: float = 1.0  # the parent's language model's learning rate, relative to ``lr``
    text_rows: int = 2  # pretraining windows (256 tokens) in every batch, beside the image questions
    seeds: int = 1
    compile: bool = False


@dataclass(frozen=True)
class PostTrainScale:
    """Post-training (paper §4): reasoning SFT (the stronger teacher, then each child by KL), STEM RL, General RL.

    ``train_problems`` per STEM task and ``train_rubrics`` rubric prompts feed both SFT and RL;
    ``test_problems`` per task and ``test_rubrics`` are held out. RL: ``prompts`` prompts x
    ``group_size`` rollouts per iteration; the generation limit rises from ``stem_tokens`` to
    ``general_tokens`` between the two RL stages, as the paper's 32K -> 80K.
    """

    train_problems: int
    train_rubrics: int
    test_problems: int
    test_rubrics: int
    teacher_steps: int
    sft_steps: int
    stem_steps: int
    general_steps: int
    batch_size: int = 32
    lr: float = 1e-3
    prompts: int = 8
    group_size: int = 8
    rl_lr: float = 1e-4
    temperature: float = 1.0  # of the rollouts
    kl_coef: float = 0.0  # weight of the KL term to the stage's starting model (0: no reference, as Magistral)
    inner_steps: int = 2
    stem_tokens: int = 64
    general_tokens: int = 96
    samples: int = 16  # rollouts per held-out prompt: pass@1 is their mean, pass@16 from all 16
    # --- Instruct SFT, the pairwise reward model and ODPO (the Instruct and Reasoning models' last stage)
    instruct_steps: int = 40  # answer-style SFT of each child, KL from the teacher
    pwrm_prompts: int = 240  # training rubric prompts the PWRM's pairs are sampled on
    pwrm_samples: int = 2  # answers per prompt from each policy (each child's Instruct SFT and Reasoning model)
    pwrm_pairs: int = 6  # ranked pairs kept per prompt (each shown in both orders)
    pwrm_steps: int = 240  # 80 left the verdict at chance (68% agreement, T at the top of the grid)
    odpo_steps: int = 20  # iterations of ``prompts`` prompts x 2 responses
    odpo_lr: float = 2e-4
    beta: float = 0.1
    odpo_samples: int = 8  # rollouts per held-out prompt in the ODPO study (win rates: 8 x 8 comparisons a prompt)


@dataclass(frozen=True)
class ReportScale:
    """How much the scores read: held-out windows per source, math problems, cloze questions."""

    per_source: int
    n_math: int
    n_cloze: int


@dataclass(frozen=True)
class Scale:
    name: str
    pretrain: PretrainScale
    prune_study: PruneStudyScale
    cascade: CascadeScale
    longctx: LongScale
    report: ReportScale
    vision: VisionScale
    posttrain: PostTrainScale


# Only the default scale compiles: compiling costs 15-40 s per model, more than a ci stage trains.
SCALES = {
    "ci": Scale(
        name="ci",
        pretrain=PretrainScale(
            steps=40, warmup_steps=10, eval_every=20, ckpt_every=20, log_every=1, eval_windows=24, sample_tokens=24,
        ),
        prune_study=PruneStudyScale(calib_windows=8, val_per_source=4, points=2),
        cascade=CascadeScale(
            short_steps=6, long_steps=2, batch_size=4, warmup_steps=2, calib_windows=8, eval_every=3, eval_batches=2,
            ckpt_every=3,
        ),
        longctx=LongScale(windows=2, bucket=256, lengths=(128, 512), depths=(0.0, 1.0), passkeys=2),
        report=ReportScale(per_source=4, n_math=4, n_cloze=8),
        vision=VisionScale(
            train_scenes=48, test_scenes=8, align_steps=6, parent_steps=4, child_steps=3, align_batch_size=16,
            batch_size=8, text_rows=1,
        ),
        posttrain=PostTrainScale(
            train_problems=16, train_rubrics=16, test_problems=2, test_rubrics=4, teacher_steps=3, sft_steps=2,
            stem_steps=2, general_steps=2, batch_size=8, prompts=2, group_size=2, stem_tokens=8, general_tokens=12,
            samples=2, instruct_steps=2, pwrm_prompts=6, pwrm_samples=2, pwrm_pairs=2, pwrm_steps=2, odpo_steps=2,
            odpo_samples=2,
        ),
    ),
    "default": Scale(
        name="default",
        pretrain=PretrainScale(steps=600, compile=True),  # 600 x 16 x 256 = 2.46M tokens, ~1.1 epochs
        prune_study=PruneStudyScale(calib_windows=64, val_per_source=32, points=6),
        cascade=CascadeScale(short_steps=100, long_steps=25, claim_seeds=3, compile=True),
        longctx=LongScale(),
        report=ReportScale(per_source=32, n_math=50, n_cloze=100),
        vision=VisionScale(
            train_scenes=3000, test_scenes=250, align_steps=500, parent_steps=150, child_steps=100, seeds=3
        ),
        posttrain=PostTrainScale(
            train_problems=1000, train_rubrics=2000, test_problems=20, test_rubrics=40, teacher_steps=120,
            sft_steps=60, stem_steps=10, general_steps=10, rl_lr=3e-4, kl_coef=0.05,
        ),
    ),
}  # fmt: skip


def get_scale(scale: str | Scale) -> Scale:
    """The settings of ``scale`` (a name in ``SCALES`` or a ``Scale``); an unknown name is a one-line error."""
    if isinstance(scale, Scale):
        return scale
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose from {', '.join(SCALES)}")
    return SCALES[scale]
