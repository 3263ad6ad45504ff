"""`kit notebook`: a code competition's package and notebook, rehearsed here (`--local`), budgeted and
pushed."""

from __future__ import annotations

from pathlib import Path

import click

from kit import ledger as submission_ledger
from kit.commands.results import ledger_row, submission_file
from kit.config import Config
from kit.kaggle import budget, kernels
from kit.kaggle import client as kaggle
from kit.run import Run, Summary
from kit.run_folder import (
    find_run,
    run_summary,
)


def notebook(
    config: Config,
    run: str | None,
    gpu: bool | None,
    submit: bool,
    message: str,
    submit_only: bool = False,
    delete_old_versions: bool = False,
    local: bool = False,
    force: bool = False,
) -> dict:
    """A code competition, in one command: package the run as a private Kaggle dataset, write and push the
    notebook that predicts with it (internet off), follow it to the end, fetch its outputs, and with
    `submit`, make the code submission and record it in the ledger as `kit submit` does. With `submit`,
    Kaggle is asked first whether a submission can be made (joined, rules accepted, one left today), so
    nothing is built for nothing. `submit_only` submits the output of the run's notebook that completed
    already, without running it again. `delete_old_versions` drops the dataset's earlier versions.

    `local`: rehearse instead (kit.kaggle.rehearsal: built and executed here, offline, timed; nothing is
    pushed, no credentials asked for). Before a push, the last rehearsal's time budget is shown; above 80%
    of notebook.timeout_minutes the push is refused unless `force`."""
    from kit.kaggle import notebook as notebook_writer  # heavy (nbformat; torch through package)
    from kit.kaggle import package  # heavy (torch, timm: kit.predict.inference)

    slug = config.competition.kaggle or (config.name if local else "")  # a rehearsal names the folder
    if not slug:
        raise click.ClickException(
            f"{config.path}: set competition.kaggle (the Kaggle slug) for `kit notebook`, "
            "e.g. --set competition.kaggle=SLUG"
        )
    if (submit or submit_only) and config.competition.submission != "notebook":
        raise click.ClickException(
            f"{config.path}: competition.submission = {config.competition.submission!r}: Kaggle takes files, "
            f"not notebooks, for {slug}; use `kit submit {config.name}` "
            "(or set competition.submission = 'notebook')"
        )
    run_dir = find_run(config, run)
    summary = run_summary(run_dir, "kit notebook")
    if summary.is_ensemble:
        raise click.ClickException(
            f"{run_dir.name} is an ensemble (no weights of its own): package one of its runs with --run"
        )
    use_gpu = config.notebook.gpu if gpu is None else gpu
    accelerator = budget.default_accelerator(config.notebook.accelerator, use_gpu)
    if local:
        return _rehearse_notebook(config, run_dir, summary, slug, accelerator)
    rehearsed = submit_only or _check_budget(config, run_dir, accelerator, force)  # over the limit: stop
    api = kaggle.authenticated_api()  # missing credentials stop here, before anything is built
    if submit or submit_only:
        kernels.require_code_submission_possible(api, slug)  # so are rules, joining and today's limit
    owner = kernels.username(api)
    dataset_id = f"{owner}/{package.dataset_slug(config.name)}"
    base = Run(run_dir).kaggle_folder
    if submit_only:
        pushed = kernels.recorded_pushed(base, f"run `kit notebook {config.name} --submit` instead")
        kept_output = base / "output" / package.SUBMISSION_FILE
        package.check_submission(config, kept_output, summary.classes, summary.task_record)
        return _submit_notebook(config, run_dir, summary, api, pushed, message)
    built = package.build(config, run_dir, summary, dataset_id, base / "dataset", accelerator)
    click.echo(
        f"package {dataset_id}: {built.size_bytes / package.MEGABYTE:.1f} MB "
        f"({len(built.manifest['weights'])} weight files, wheel {built.manifest['wheel']})"
    )
    notebook_path, metadata = notebook_writer.write_kernel(
        base / "notebook", built.manifest, owner, dataset_id, slug, use_gpu, accelerator
    )
    where = {"cpu": "CPU", "t4": "GPU T4", "t4x2": "GPU T4 x2"}[accelerator]
    if not rehearsed:
        click.echo(f"time budget: unknown (no rehearsal: `kit notebook {config.name} --local` measures it)")
    click.echo(f"notebook {notebook_path.relative_to(run_dir.parent)} ({where}, internet off)")
    timeout = config.notebook.timeout_minutes * 60
    outcome = kernels.publish_dataset(
        api, built.folder, dataset_id, f"run {run_dir.name}", delete_old_versions=delete_old_versions
    )
    kernels.wait_for_dataset(api, dataset_id, config.notebook.poll_seconds, timeout)
    click.echo(f"dataset {dataset_id}: {outcome}")
    pushed = kernels.push_kernel(api, base / "notebook")
    click.echo(f"pushed {pushed.ref} version {pushed.version} {pushed.url}".rstrip())
    finished = kernels.wait_for_kernel(api, pushed, config.notebook.poll_seconds, timeout)
    outputs, log = kernels.kernel_output(api, pushed, base / "output")
    if finished.status != "complete":
        for line in kernels.last_lines(log):
            click.echo(f"  | {line}", err=True)
        raise click.ClickException(
            f"the notebook {pushed.ref} version {pushed.version} ended {finished.status}"
            f"{': ' + finished.failure if finished.failure else ''} (its log's last lines are above; all of "
            f"it in {base / 'output'}): nothing was submitted"
        )
    produced = base / "output" / package.SUBMISSION_FILE
    if produced not in outputs:
        raise click.ClickException(
            f"the notebook {pushed.ref} version {pushed.version} wrote no {package.SUBMISSION_FILE}: "
            "nothing was submitted"
        )
    package.check_submission(config, produced, summary.classes, summary.task_record)
    click.echo(f"notebook {pushed.ref} v{pushed.version} complete; its {package.SUBMISSION_FILE} is valid")
    kernels.record_pushed(base, pushed)  # `--submit-only` can submit this output later
    if not submit:
        row = ledger_row(config, run_dir, summary, f"{pushed.ref}@{pushed.version}", message)
        return {**row, "status": "notebook run (not submitted)"}
    return _submit_notebook(config, run_dir, summary, api, pushed, message)


def _submit_notebook(config: Config, run_dir: Path, summary: Summary, api, pushed, message: str) -> dict:
    """The code submission of a notebook version whose output was checked, recorded in the ledger."""
    from kit.kaggle import package  # heavy

    row = ledger_row(config, run_dir, summary, f"{pushed.ref}@{pushed.version}", message)
    kept = (
        f"the notebook's output is kept in {run_dir / 'kaggle' / 'output'}: submit it without running the "
        f"notebook again with `kit notebook {config.name} --run {run_dir.name} --submit-only`"
    )
    kernels.submit_code(api, config.competition.kaggle, pushed, package.SUBMISSION_FILE, row["message"], kept)
    row.update(status="uploaded")
    submission_ledger.append_ledger(row)
    click.echo(f"submitted: {pushed.ref} version {pushed.version} ({row['message']})")
    return row


def _rehearse_notebook(config: Config, run_dir: Path, summary: Summary, slug: str, accelerator: str) -> dict:
    """`kit notebook --local`: the rehearsal, its phases, its submission against `kit predict`'s, and the
    time budget on Kaggle's `accelerator`."""
    from kit.kaggle import rehearsal  # heavy (nbclient; torch through the package)

    gpu = accelerator != "cpu"
    click.echo(
        f"rehearsing the notebook of run {run_dir.name} here: offline, {budget.KAGGLE_CORES} cores, "
        f"{'the GPU if any' if gpu else 'no GPU'}; nothing is pushed"
    )
    record = rehearsal.rehearse(config, run_dir, summary, slug, gpu)
    for cell in record["cells"]:
        click.echo(f"  {cell['seconds']:8.1f} s  {cell['cell']}")
    phases = record["phases"]
    click.echo(
        "  prediction: "
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in phases["seconds"].items())
        + f" ({phases['images']} images x {phases['weight_files']} weight files x {phases['views']} views on "
        f"{phases['device']}, {phases['precision']}, {phases['cores']} cores)"
    )
    expected = submission_file(config, run_dir, summary, remake=False)  # `kit predict`'s file for the run
    difference = rehearsal.largest_difference(Path(record["submission"]), expected)
    same = "identical to" if difference == 0 else f"largest difference {difference:.2g} from"
    click.echo(f"{record['submission']}: {same} `kit predict`'s {expected.name}")
    measured = budget.Rehearsal(**record["budget"])
    hidden, limit = config.notebook.hidden_test_images, config.notebook.timeout_minutes
    for line in budget.budget_lines(measured, accelerator, hidden, limit):
        click.echo(line)
    return {**record, "difference": difference}


def _check_budget(config: Config, run_dir: Path, accelerator: str, force: bool) -> bool:
    """The last rehearsal's time budget on Kaggle, shown before a push; above budget.REFUSE_ABOVE of
    notebook.timeout_minutes the push is refused unless `force`. Whether the run had a rehearsal."""
    from kit.kaggle import rehearsal  # heavy (torch through the package)

    record = rehearsal.read_rehearsal(run_dir)
    if record is None:
        return False
    measured = budget.Rehearsal(**record["budget"])
    hidden, limit = config.notebook.hidden_test_images, config.notebook.timeout_minutes
    for line in budget.budget_lines(measured, accelerator, hidden, limit):
        click.echo(line)
    estimate = budget.estimate(measured, accelerator, hidden)
    if budget.over_budget(estimate, limit) and not force:
        raise click.ClickException(
            f"the notebook is estimated at {estimate.minutes:.0f} min on Kaggle's {accelerator}, above "
            f"{budget.REFUSE_ABOVE:.0%} of notebook.timeout_minutes = {limit:g} ({config.path}): take the "
            "cut above, or push anyway with --force"
        )
    return True
