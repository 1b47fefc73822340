"""Training on several processes: two gloo ranks on the CPU take the step one process takes on their concatenated
batches, a distributed run resumes exactly and loads in one process, torchrun's multi-node rendezvous works, ranks
that disagree stop with one clear error, and a stopped or killed launch leaves no rank running and a resumable run."""

import contextlib
import io
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import condgen
from condgen.cli import main
from condgen.data.iclevr import load_dataset
from condgen.data.imageio import to_signed
from condgen.train import distributed
from condgen.train.config import load_config

ROOT = Path(condgen.__file__).resolve().parents[1]
WORLD = 2
PER_RANK = 3  # images per rank and step
TINY_DDPM = [
    "model.channels=8",
    "model.channel_mults=[1,2]",
    "model.attention_resolutions=[16]",
    "model.heads=2",
    "diffusion.num_steps=20",
    "sample.steps=2",
]
TINY_GAN = ["model.g_channels=8", "model.d_channels=8", "model.noise_dim=16", "model.label_dim=16"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def quiet_env(**extra: str) -> dict[str, str]:
    """The environment of a spawned training process: one thread, and this checkout's condgen."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **extra}


def linear_adam(optimizers: dict[str, torch.optim.Optimizer]) -> None:
    """Adam's first step moves every weight by about lr * sign(gradient), so a gradient that is zero up to rounding
    (a bias before batch norm) would move by +-lr depending on its rounding; with eps = 1 the step is about
    lr * gradient, and steps from gradients equal to float tolerance are equal to float tolerance."""
    for optimizer in optimizers.values():
        for group in optimizer.param_groups:
            group["eps"] = 1.0


class Pinned:
    """Every random input of one training step, drawn once for the global batch: rank r of n gets rows
    [r * PER_RANK, (r + 1) * PER_RANK) of each, a single process all of them."""

    def __init__(self, draws: list[torch.Tensor], rank: int, world: int):
        self.draws, self.next = draws, 0
        self.rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK) if world > 1 else slice(None)

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        value = self.draws[self.next][self.rows]
        self.next += 1
        return value


def diffusion_step(data_root: Path, rank: int, world: int) -> dict[str, torch.Tensor]:
    """One DiffusionTask step with its batch, timesteps and noise pinned; the trained weights after it."""
    from condgen.diffusion.trainer import DDPMRunConfig, DiffusionTask

    overrides = ["device=cpu", "optim.lr=0.1", "optim.warmup_steps=1", "optim.label_dropout=0", *TINY_DDPM]
    config = load_config(DDPMRunConfig, None, overrides)
    data = load_dataset(data_root, progress=False)
    task = DiffusionTask(config, data, data_root, None)
    linear_adam(task.optimizers)
    count = WORLD * PER_RANK
    random = torch.Generator().manual_seed(1)
    x0 = to_signed(data.images[:count])
    batch = Pinned([x0], rank, world)
    labels = Pinned([data.labels[:count]], rank, world)
    task.batch = lambda: (batch(), labels())
    t = Pinned([torch.randint(0, 20, (count,), generator=random)], rank, world)
    noise = Pinned([torch.randn(x0.shape, generator=random)], rank, world)
    diffusion = task.diffusion

    def training_loss(model, x0, labels, generator=None):
        steps, eps = t(), noise()
        prediction = model(diffusion.q_sample(x0, steps, eps), steps, labels)
        per_sample = (prediction - diffusion.training_target(x0, eps, steps)).square().flatten(1).mean(dim=1)
        return (diffusion.loss_weights(steps) * per_sample).mean()

    task.diffusion.training_loss = training_loss
    task.train_step(0)
    return {k: v.detach().clone() for k, v in task.model.named_parameters()}


class Halves(torch.nn.Module):
    """A module run on each rank's rows apart, as batch norm sees them in a distributed run on CPUs (torch's
    SyncBatchNorm is for GPUs only)."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.module(*rows) for rows in zip(*(x.split(PER_RANK) for x in inputs))])


def gan_step(data_root: Path, rank: int, world: int) -> dict[str, torch.Tensor]:
    """One wgan_gp GANTask step (two critic updates with the gradient penalty, one generator update) with its real
    batches, noise and penalty mixing pinned; the generator's and the critic's weights after it."""
    import condgen.gan.trainer as trainer

    overrides = ["device=cpu", "optim.loss=wgan_gp", "optim.n_critic=2", "optim.lr_g=0.1", "optim.lr_d=0.1"]
    config = load_config(trainer.GANRunConfig, None, [*overrides, "optim.hflip=false", *TINY_GAN])
    data = load_dataset(data_root, progress=False)
    task = trainer.GANTask(config, data, data_root, None)
    linear_adam(task.optimizers)
    count = WORLD * PER_RANK
    random = torch.Generator().manual_seed(2)
    images = [to_signed(data.images[i * count : (i + 1) * count]) for i in range(3)]
    labels = [data.labels[i * count : (i + 1) * count] for i in range(3)]
    real, real_labels = Pinned(images, rank, world), Pinned(labels, rank, world)
    task._real_batch = lambda: (real(), real_labels())
    task._noise = Pinned([torch.randn(count, 16, generator=random) for _ in range(3)], rank, world)
    mixing = Pinned([torch.rand(count, 1, 1, 1, generator=random) for _ in range(2)], rank, world)

    def gradient_penalty(critic, real, fake, labels, generator=None):
        epsilon = mixing()
        mixed = (epsilon * real.detach() + (1 - epsilon) * fake.detach()).requires_grad_(True)
        (gradient,) = torch.autograd.grad(critic(mixed, labels).sum(), mixed, create_graph=True)
        return (gradient.flatten(1).norm(dim=1) - 1).square().mean()

    if world == 1:
        task.generator_net = Halves(task.generator_net)
    original, trainer.gradient_penalty = trainer.gradient_penalty, gradient_penalty
    try:
        task.train_step(0)
    finally:  # the test process goes on to other tests
        trainer.gradient_penalty = original
    nets = {"generator": task.modules["generator"], "critic": task.modules["critic"]}
    return {f"{n}.{k}": v.detach().clone() for n, net in nets.items() for k, v in net.named_parameters()}


def evaluator_step(data_root: Path, rank: int, world: int) -> dict[str, torch.Tensor]:
    """One EvaluatorTask step (the ResNet18 and its batch norm) with its batch pinned; the weights after it."""
    from condgen.train.evaluator import EvaluatorRunConfig, EvaluatorTask

    config = load_config(EvaluatorRunConfig, None, ["device=cpu", "optim.epochs=0", "optim.lr=2.5"])
    data = load_dataset(data_root, progress=False)
    task = EvaluatorTask(config, data, data_root)
    linear_adam(task.optimizers)
    count = WORLD * PER_RANK
    images, labels = Pinned([to_signed(data.images[:count])], rank, world), Pinned([data.labels[:count]], rank, world)
    task._batch = lambda: (images(), labels())
    if world == 1:
        task.train_logits = Halves(task.train_logits)
    task.train_step(0)
    return {k: v.detach().clone() for k, v in task.model.named_parameters()}


STEPS = {"diffusion": diffusion_step, "gan": gan_step, "evaluator": evaluator_step}


def rank_worker(rank: int, world: int, ports: tuple[int, int], data_root: Path, out: Path) -> None:
    """One gloo rank of a torch.multiprocessing.spawn, with torchrun's environment: takes every pinned step, then
    starts `condgen train classifier` with a config of its own (rank 1 changes the learning rate)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1")
    os.environ["MASTER_PORT"] = str(ports[0])
    torch.set_num_threads(1)
    with distributed.session(torch.device("cpu")):
        assert distributed.world_size() == world and distributed.rank() == rank
        for name, step in STEPS.items():
            torch.save(step(data_root, rank, world), out / f"{name}-rank{rank}.pt")
    os.environ["MASTER_PORT"] = str(ports[1])
    args = ["train", "classifier", "--data", str(data_root), "--out", str(out / "run"), "device=cpu"]
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        status = main([*args, *(["optim.lr=1e-3"] if rank == 1 else [])])
    (out / f"disagree-rank{rank}.json").write_text(json.dumps({"status": status, "stderr": stderr.getvalue()}))


@pytest.fixture(scope="module")
def ranks_out(synth_template, tmp_path_factory) -> Path:
    """What two gloo ranks wrote (:func:`rank_worker`); one spawn for every check, to keep the suite fast."""
    out = tmp_path_factory.mktemp("ranks")
    ports = (free_port(), free_port())
    context = torch.multiprocessing.spawn(
        rank_worker, args=(WORLD, ports, synth_template, out), nprocs=WORLD, join=False
    )
    deadline = time.monotonic() + 180
    while not context.join(timeout=1):
        if time.monotonic() > deadline:  # a hang fails the tests instead of stalling the suite
            for process in context.processes:
                process.kill()
            pytest.fail("the ranks did not finish within 180 s")
    return out


@pytest.fixture
def one_thread():
    """The reference steps on one thread, as the ranks take them (two threads on a busy machine make the GAN's double
    backward many times slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("step", ["diffusion", "gan", "evaluator"])
def test_two_ranks_take_the_step_of_one_process_on_the_concatenated_batch(step, synth_template, ranks_out, one_thread):
    ranks = [torch.load(ranks_out / f"{step}-rank{r}.pt") for r in range(WORLD)]
    single = STEPS[step](synth_template, 0, 1)
    alone = STEPS[step](synth_template, 0, 2)  # rank 0's rows without the other rank's: what DDP must not give
    assert ranks[0].keys() == single.keys()
    for name, value in single.items():
        assert torch.equal(ranks[0][name], ranks[1][name]), name  # DDP keeps the replicas identical
        assert torch.allclose(ranks[0][name], value, rtol=1e-4, atol=1e-5), (name, (ranks[0][name] - value).abs().max())
    assert any(not torch.allclose(alone[name], value, rtol=1e-4, atol=1e-5) for name, value in single.items())


def test_ranks_with_different_configs_stop_with_one_clear_error(ranks_out):
    results = [json.loads((ranks_out / f"disagree-rank{r}.json").read_text()) for r in range(WORLD)]
    assert [result["status"] for result in results] == [2, 2]
    errors = [[line for line in r["stderr"].splitlines() if line.startswith("condgen:")] for r in results]
    expected = "rank 1 of 2 has another config than rank 0; start every process with the same command, config and data"
    assert errors == [[f"condgen: error: {expected}"], []]  # reported once, by rank 0
    assert not (ranks_out / "run" / "run.json").exists()  # nothing was written


LOOP = ["optim.batch_size=2", "loop.log_every=1", "loop.checkpoint_every=2", "loop.eval_every=0", "device=cpu"]


def train_args(dataset: Path, run: Path, evaluator_file: Path, *extra: str) -> list[str]:
    command = ["train", "ddpm", "--data", str(dataset), "--out", str(run), "--evaluator", str(evaluator_file)]
    return [*command, *TINY_DDPM, *LOOP, *extra]


def two_machines(port: int, args: list[str]) -> list[subprocess.Popen]:
    """One torchrun per "machine" on this host (node rank 0 and 1, one process each), meeting at 127.0.0.1:port."""
    launcher = ["--nnodes=2", "--nproc_per_node=1", "--master_addr=127.0.0.1", f"--master_port={port}"]
    return [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", *launcher, f"--node_rank={node}", "-m", "condgen", *args],
            env=quiet_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for node in range(2)
    ]


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def checkpoint_tensors(run: Path) -> dict[str, torch.Tensor]:
    folder = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    return {f"{f.name}/{k}": v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}


def test_a_run_on_two_machines_resumes_exactly_on_two_processes_and_loads_in_one(
    dataset, evaluator_file, tmp_path, monkeypatch
):
    whole, crashed = tmp_path / "whole", tmp_path / "crashed"
    nodes = two_machines(free_port(), train_args(dataset, whole, evaluator_file, "loop.steps=4"))
    results = [(node.communicate(timeout=180)[1], node.returncode) for node in nodes]  # a hang fails the test
    assert all(status == 0 for _, status in results), results
    assert "2 processes (gloo), global batch 4 = 2 per process x 2" in (whole / "log.txt").read_text()
    # the run as a crash after the checkpoint of step 2 leaves it; --nproc 2 resumes it through torchrun
    shutil.copytree(whole, crashed)
    shutil.rmtree(crashed / "checkpoints" / "step-0000004")
    (crashed / "checkpoints" / "latest").write_text("step-0000002\n")
    for key, value in quiet_env().items():
        monkeypatch.setenv(key, value)  # for the torchrun that --nproc starts
    assert main([*train_args(dataset, crashed, evaluator_file, "loop.steps=4"), "--resume", "--nproc", "2"]) == 0
    losses = [[(r["step"], r["loss"]) for r in records(run) if "loss" in r] for run in (whole, crashed)]
    assert losses[0] == losses[1] and [step for step, _ in losses[0]] == [1, 2, 3, 4]
    a, b = checkpoint_tensors(whole), checkpoint_tensors(crashed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "rng.safetensors/rank1.generator.data" in a  # rank 1's stream, for an exact resume
    assert not any(key.split("/")[1].startswith("module.") for key in a)  # plain module state dicts
    out = tmp_path / "samples"
    assert main(["sample", "--run", str(whole), "--objects", "red cube", "--out", str(out), "--steps", "2"]) == 0
    assert (out / "0.png").is_file()


ENDLESS_GAN = [
    *TINY_GAN,
    "optim.batch_size=4",
    "loop.steps=100000",
    "loop.log_every=1",
    "loop.checkpoint_every=2",
    "loop.eval_every=0",
]


def launch(dataset: Path, run: Path, evaluator_file: Path, stderr: Path) -> subprocess.Popen:
    """`condgen train gan --nproc 2` in a process of its own, training until it is stopped; its stderr in a file."""
    command = ["train", "gan", "--data", str(dataset), "--out", str(run), "--evaluator", str(evaluator_file)]
    with stderr.open("w") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "condgen", *command, "--nproc", "2", *ENDLESS_GAN, "device=cpu"],
            env=quiet_env(),
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )


def running(pid: int) -> bool:
    """Whether process ``pid`` has not ended yet (a zombie has ended: only its parent's bookkeeping is left)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def children(parent: int) -> list[int]:
    """The processes whose parent is ``parent``, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry.name))
        except OSError:  # a process that ended meanwhile
            continue
    return found


def rank_of(pid: int) -> int:
    """The RANK in process ``pid``'s environment."""
    variables = Path(f"/proc/{pid}/environ").read_text().split("\0")
    return int(dict(v.split("=", 1) for v in variables if "=" in v)["RANK"])


def ranks_after(launcher: subprocess.Popen, run: Path, step: int) -> dict[int, int]:
    """Waits until the launched run has logged ``step``; returns its ranks' pids by rank (the launcher's children,
    read from /proc)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert launcher.poll() is None, f"the launch ended with status {launcher.returncode}"
        metrics = run / "metrics.jsonl"
        lines = metrics.read_text().split("\n")[:-1] if metrics.exists() else []  # whole lines only
        if any(json.loads(line)["step"] >= step for line in lines):
            ranks = {rank_of(pid): pid for pid in children(launcher.pid)}
            assert sorted(ranks) == [0, 1], ranks
            return ranks
        time.sleep(0.1)
    raise AssertionError(f"step {step} not reached")


def end_all(launcher: subprocess.Popen, ranks: dict[int, int]) -> None:
    """Kills whatever a failed test left running of the launch."""
    if launcher.poll() is None:
        launcher.kill()
        launcher.wait()
    for pid in ranks.values():
        if running(pid):
            os.kill(pid, signal.SIGKILL)


def checkpoint_folders(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


def test_sigterm_to_the_launcher_stops_every_rank_and_the_run_resumes(dataset, evaluator_file, tmp_path, monkeypatch):
    run, stderr = tmp_path / "run", tmp_path / "stderr.txt"
    launcher, ranks = launch(dataset, run, evaluator_file, stderr), {}
    try:
        ranks = ranks_after(launcher, run, 3)
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=60) == 130
        assert [pid for pid in ranks.values() if running(pid)] == []  # the launcher returns once every rank ended
    finally:
        end_all(launcher, ranks)
    saved = checkpoint_folders(run)
    newest = (run / "checkpoints" / "latest").read_text().strip()
    last = stderr.read_text().strip().splitlines()[-1]
    assert last.startswith(f"condgen: stopped by SIGTERM; it continues from {newest} with: condgen train gan ")
    assert last.endswith(f" --resume --evaluator {evaluator_file} --nproc 2")
    assert not [name for name in saved if name.startswith(".")]  # no half-written checkpoint
    time.sleep(1)
    assert checkpoint_folders(run) == saved  # nothing writes to the run any more
    step = int(newest.split("-")[1])
    assert f"SIGTERM after step {step}; saved {newest}" in (run / "log.txt").read_text()  # the ranks saved their step
    for key, value in quiet_env().items():
        monkeypatch.setenv(key, value)  # for the ranks that --nproc starts
    handler = signal.getsignal(signal.SIGTERM)
    assert main([*shlex.split(last.split(" with: ")[1])[1:], f"loop.steps={step + 1}"]) == 0
    assert signal.getsignal(signal.SIGTERM) == handler  # the launcher leaves this process's handlers as they were
    assert f"resumed at step {step}" in (run / "log.txt").read_text()
    assert (run / "checkpoints" / "latest").read_text().strip() == f"step-{step + 1:07d}"


def test_the_ranks_end_when_the_launcher_is_killed(dataset, evaluator_file, tmp_path):
    run = tmp_path / "run"
    launcher, ranks = launch(dataset, run, evaluator_file, tmp_path / "stderr.txt"), {}
    try:
        ranks = ranks_after(launcher, run, 2)
        launcher.kill()  # SIGKILL: nothing the launcher could pass on
        launcher.wait()
        killed = time.monotonic()
        while any(running(pid) for pid in ranks.values()) and time.monotonic() < killed + 20:
            time.sleep(0.1)
        assert [pid for pid in ranks.values() if running(pid)] == []
        assert time.monotonic() - killed < 15  # the ranks' step and checkpoint, not distributed.STOP_GRACE
    finally:
        end_all(launcher, ranks)
    saved = checkpoint_folders(run)
    newest = (run / "checkpoints" / "latest").read_text().strip()
    assert newest in saved and not [name for name in saved if name.startswith(".")]
    assert f"SIGTERM after step {int(newest.split('-')[1])}; saved {newest}" in (run / "log.txt").read_text()
    time.sleep(1)
    assert checkpoint_folders(run) == saved


def test_a_killed_rank_is_named_on_the_last_line(dataset, evaluator_file, tmp_path):
    run, stderr = tmp_path / "run", tmp_path / "stderr.txt"
    launcher, ranks = launch(dataset, run, evaluator_file, stderr), {}
    try:
        ranks = ranks_after(launcher, run, 3)
        os.kill(ranks[1], signal.SIGKILL)
        assert launcher.wait(timeout=60) == 1
        assert not running(ranks[0])
    finally:
        end_all(launcher, ranks)
    newest = (run / "checkpoints" / "latest").read_text().strip()
    last = stderr.read_text().strip().splitlines()[-1]
    cause = f"condgen: rank 1 (pid {ranks[1]}) was killed by SIGKILL, which stopped the run; "
    assert last.startswith(f"{cause}it continues from {newest} with: condgen train gan ")
    assert last.endswith(" --nproc 2") and " --resume " in last
