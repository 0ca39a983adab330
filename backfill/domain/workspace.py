"""Is the API key the workspace the runs came from? The verdict on what a probe found."""

from __future__ import annotations

#: A batch whose promised runs come back empty this often is suspicious: a wrong
#: workspace/key, or feedback expired or deleted in LangSmith; the probe tells which.
EMPTY_RATIO = 0.5
EMPTY_MIN_RUNS = 3
#: The probe asks for the window's newest this many runs whose feedback_stats count records.
PROBE_RUNS = 5


def suspicious(empty: int, promising: int) -> bool:
    """Do ``empty`` of a batch's ``promising`` runs (answered, their feedback_stats counting
    records) raise the question of the workspace?"""
    return promising >= EMPTY_MIN_RUNS and empty > EMPTY_RATIO * promising


def wrong_workspace(silent: int, answered: int) -> bool:
    """Does a probe of the window's newest promising runs, ``answered`` of them and ``silent``
    of those without any record, say the key is another workspace's?"""
    return answered == 0 or silent > EMPTY_RATIO * answered
