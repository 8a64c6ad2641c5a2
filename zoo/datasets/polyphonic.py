"""Bach chorales from music21's corpus as 88-key binary piano rolls at quarter-note steps.

The polyphonic-music benchmark of Boulanger-Lewandowski et al. (2012) and of the Deep Markov
Model (Krishnan et al. 2017) is "JSB chorales"; this rebuilds the same kind of data from the
371 four-part chorales of music21's corpus (Riemenschneider numbering), which ships with the
package, so it works offline. It is not the identical 229/76/77 JSB file: the split and the
pieces differ, so NLL numbers are comparable only in kind with the published ones.

Parsing all 371 chorales takes about a minute; the rolls are cached after the first parse in
``$ZOO_DATA_DIR`` (default ``~/.cache/keras-prob-zoo/``).
"""

from __future__ import annotations

import math
import os
import sys
import zipfile

import numpy as np

from zoo.datasets._deps import require
from zoo.datasets._registry import register

LOWEST_MIDI, NUM_KEYS = 21, 88  # A0 .. C8
CACHE_FILE = "bach_chorales_v1.npz"
SPLITS = ("train", "valid", "test")


def data_dir() -> str:
    """Where the zoo caches processed data: $ZOO_DATA_DIR or ~/.cache/keras-prob-zoo."""
    return os.environ.get("ZOO_DATA_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "keras-prob-zoo"
    )


def chorale_names() -> list[str]:
    """Corpus names of the chorales in Riemenschneider order (e.g. 'bach/bwv269')."""
    music21 = require("music21")
    return list(music21.corpus.chorales.Iterator(returnType="filename"))


def piano_roll(score) -> np.ndarray:
    """A music21 score as a uint8 [T, 88] roll: key k (MIDI 21 + k) sounds at quarter step t.

    Step t covers the instant t (in quarter notes from the start); a note is on at t when
    onset <= t < onset + duration, so a note shorter than a quarter that does not span a beat
    is not seen. Grace notes (no duration) are skipped; pitches outside MIDI 21..108 dropped.
    """
    steps = int(math.ceil(float(score.highestTime)))
    roll = np.zeros((steps, NUM_KEYS), np.uint8)
    for element in score.flatten().notes:
        start = float(element.offset)
        end = start + float(element.quarterLength)
        first, stop = int(math.ceil(start)), min(int(math.ceil(end)), steps)
        if stop <= first:
            continue
        for pitch in element.pitches:
            key = pitch.midi - LOWEST_MIDI
            if 0 <= key < NUM_KEYS:
                roll[first:stop, key] = 1
    return roll


def _parse_roll(name: str) -> np.ndarray:
    music21 = require("music21")
    return piano_roll(music21.corpus.parse(name))


def _read_cache(path: str):
    """(names, rolls) from the cache file; empty if it is missing or unreadable."""
    if not os.path.exists(path):
        return [], []
    try:
        with np.load(path, allow_pickle=False) as data:
            names = [str(s) for s in data["names"]]
            bounds = np.concatenate([[0], np.cumsum(data["lengths"])])
            all_rolls = data["rolls"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        print(f"Ignoring unreadable chorale cache {path} ({err}); parsing again.",
              file=sys.stderr)
        return [], []
    return names, [all_rolls[bounds[i]:bounds[i + 1]] for i in range(len(names))]


def _write_cache(path: str, names, rolls):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    np.savez_compressed(
        tmp, names=np.asarray(names, dtype=str), rolls=np.concatenate(rolls, axis=0),
        lengths=np.asarray([len(r) for r in rolls], np.int64),
    )
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old or the new file


def load_rolls(limit: int | None = None, cache_dir: str | None = None,
               verbose: bool = True) -> tuple[list[str], list[np.ndarray]]:
    """(names, rolls) of the first ``limit`` chorales (all when None), parsing only what the
    cache lacks and extending the cache with it. Rolls are uint8 [T_i, 88]."""
    path = os.path.join(cache_dir or data_dir(), CACHE_FILE)
    names, rolls = _read_cache(path)
    all_names = None
    if limit is None or len(names) < limit:
        all_names = chorale_names()
        wanted = all_names if limit is None else all_names[:limit]
        if names != wanted[:len(names)]:  # a different corpus: start afresh
            names, rolls = [], []
        done = len(names)
        todo = wanted[done:]
        show = verbose and len(todo) > 20
        for i, name in enumerate(todo):
            if show and (i % 10 == 0 or i == len(todo) - 1):
                print(f"\rParsing Bach chorales with music21 (cached afterwards): "
                      f"{done + i + 1}/{len(wanted)}", end="", file=sys.stderr, flush=True)
            rolls.append(_parse_roll(name))
            names.append(name)
        if show:
            print(file=sys.stderr)
        if todo:
            _write_cache(path, names, rolls)
    count = len(names) if limit is None else min(limit, len(names))
    return names[:count], rolls[:count]


def split_of(index: int) -> str:
    """The fixed split of the chorale at ``index`` (Riemenschneider order): 3/5 train
    (index % 5 in 0, 1, 2), 1/5 valid (3), 1/5 test (4)."""
    remainder = index % 5
    return "train" if remainder < 3 else ("valid" if remainder == 3 else "test")


@register(
    "chorales",
    "Bach chorales (music21 corpus) as 88-key binary piano rolls at quarter notes, masked.",
    splits=SPLITS,
    mask_key="mask",
    time_keys=("observations", "mask"),
)
def chorales(
    split: str = "train",
    limit: int | None = None,
    max_length: int | None = None,
    cache_dir: str | None = None,
    verbose: bool = True,
) -> dict:
    """Piano rolls of the Bach chorales, padded to a common length with a mask.

    The chorales are taken in Riemenschneider order (``music21.corpus.chorales.Iterator``);
    chorale i goes to "train" if i % 5 < 3, "valid" if i % 5 == 3, "test" if i % 5 == 4
    (of 371: 223 / 74 / 74), a fixed and deterministic split.

    Args:
        split: "train", "valid" or "test".
        limit: int or None. Use only the first ``limit`` chorales (parsing only those): tests
            use a small limit. None takes all 371.
        max_length: int or None. Pad (and crop longer chorales) to this many steps; None pads
            to the longest chorale of the split.
        cache_dir: str or None. Cache directory (default: ``data_dir()``).
        verbose: bool. Show parsing progress on stderr when more than 20 are parsed.

    Returns:
        ``observations``: float32 [N, T, 88] in {0, 1}, key k is MIDI note 21 + k;
        ``mask``: float32 [N, T], 1 on the chorale's steps; ``length``: int64 [N];
        ``index``: int64 [N], position in Riemenschneider order.
    """
    if limit is not None and int(limit) < 1:
        raise ValueError(f"limit must be a positive int or None, got {limit!r}.")
    _, rolls = load_rolls(limit, cache_dir, verbose)
    index = np.asarray([i for i in range(len(rolls)) if split_of(i) == split], np.int64)
    chosen = [rolls[i][:max_length] if max_length else rolls[i] for i in index]
    lengths = np.asarray([len(r) for r in chosen], np.int64)
    steps = int(max_length or (lengths.max() if len(lengths) else 0))
    observations = np.zeros((len(chosen), steps, NUM_KEYS), np.float32)
    for i, roll in enumerate(chosen):
        observations[i, :len(roll)] = roll
    mask = (np.arange(steps)[None, :] < lengths[:, None]).astype(np.float32)
    return {"observations": observations, "mask": mask, "length": lengths, "index": index}
