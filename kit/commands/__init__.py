"""What each `kit` command does, in the order a user runs them: download, folds, train, predict, submit,
then the ledger, reports and forks. The CLI parses and calls these; this package is the only place that
tells the user what happened (progress bars and one-line notices aside). One module per part of the
journey: data (before training), training, results (after training), notebooks (code competitions),
and common (what several share).

Commands that need no model (list, folds, runs, ledger, config, new, download) import no torch, timm,
albumentations or matplotlib: the modules that do are imported by the commands that use them, at the
start of those commands (kit.train, kit.predict.inference, kit.predict.ensemble, kit.report.report),
each import marked `# heavy`. scikit-learn (through kit.data.folds and kit.metrics) costs about a
second of start-up too, so `--help`, list, runs, ledger and config do without it.
"""

from kit.commands.common import baseline_text
from kit.commands.data import (
    download,
    duplicates,
    files,
    folds,
    leaderboard,
    list_competitions,
    mark_raw_data,
    new_competition,
    show_config,
    unmarked_message,
)
from kit.commands.notebooks import notebook
from kit.commands.results import ensemble, ledger, predict, report, runs, submission_file, submit
from kit.commands.training import (
    cv_honesty,
    cv_line,
    find_learning_rate,
    full_recipe_note,
    interrupted_line,
    load_for_training,
    resume,
    train,
)

__all__ = [
    "baseline_text",
    "cv_honesty",
    "cv_line",
    "download",
    "duplicates",
    "ensemble",
    "files",
    "find_learning_rate",
    "folds",
    "full_recipe_note",
    "interrupted_line",
    "leaderboard",
    "ledger",
    "list_competitions",
    "load_for_training",
    "mark_raw_data",
    "new_competition",
    "notebook",
    "predict",
    "report",
    "resume",
    "runs",
    "show_config",
    "submission_file",
    "submit",
    "train",
    "unmarked_message",
]
