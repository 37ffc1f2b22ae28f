"""Size arithmetic of the U-Net family: which tile sizes are valid and what they produce.

With unpadded ("valid") 3x3 convolutions, two per level, each level loses 4 pixels per axis and
every 2x2 max-pool needs an even size. For ``depth`` poolings and a bottom feature map of size
``b`` (after the two bottom convolutions; ``b >= 4`` for depth 4, so that every expanding
level keeps a positive size, which makes 188 -> 4 the smallest tile)::

    output = 2**depth * b - 4 * (2**depth - 1)
    input  = 2**depth * b + 4 * (2**(depth + 1) - 1)
    halo   = (input - output) / 2 = 6 * 2**depth - 4        (92 px for the paper's depth 4)

so ``572 -> 388`` (b = 28) and ``700 -> 516`` (b = 36). With padded ("same") convolutions the
output equals the input, which must be a multiple of ``2**depth``. All functions work per axis and
accept shapes of any length (2D or 3D).
"""

from __future__ import annotations

from collections.abc import Sequence

VALID = "valid"
SAME = "same"


def _check_padding(padding: str) -> None:
    if padding not in (VALID, SAME):
        raise ValueError(f"padding {padding!r}: expected 'valid' or 'same'")


def halo(depth: int = 4, padding: str = VALID) -> int:
    """Context in pixels that each side of an output tile needs from the input.

    Examples
    --------
    >>> halo(4)
    92
    >>> halo(4, "same")
    0
    """
    _check_padding(padding)
    return 6 * 2**depth - 4 if padding == VALID else 0


def _input_for_bottom(b: int, depth: int) -> int:
    return 2**depth * b + 4 * (2 ** (depth + 1) - 1)


def _output_for_bottom(b: int, depth: int) -> int:
    return 2**depth * b - 4 * (2**depth - 1)


def _min_bottom(depth: int) -> int:
    """Smallest bottom size for which every expanding level still has a positive size."""
    step = 2**depth
    return -(-(4 * (step - 1) + 1) // step)


def _first_valid(depth: int, padding: str) -> int:
    return _input_for_bottom(_min_bottom(depth), depth) if padding == VALID else 2**depth


def is_valid_size(size: int, depth: int = 4, padding: str = VALID) -> bool:
    """Whether one axis of this length is a valid input size.

    Examples
    --------
    >>> is_valid_size(572), is_valid_size(570)
    (True, False)
    """
    _check_padding(padding)
    step = 2**depth
    if padding == SAME:
        return size >= step and size % step == 0
    return size >= _first_valid(depth, padding) and (size - _first_valid(depth, padding)) % step == 0


def valid_sizes(max_size: int, depth: int = 4, padding: str = VALID, min_size: int = 1) -> list[int]:
    """All valid input sizes of one axis between ``min_size`` and ``max_size`` inclusive.

    Examples
    --------
    >>> valid_sizes(240)
    [188, 204, 220, 236]
    """
    _check_padding(padding)
    step = 2**depth
    first = _first_valid(depth, padding)
    return [s for s in range(first, max_size + 1, step) if s >= min_size]


def next_valid_size(size: int, depth: int = 4, padding: str = VALID) -> int:
    """Smallest valid input size of one axis that is >= ``size``.

    Examples
    --------
    >>> next_valid_size(500)
    508
    >>> next_valid_size(500, padding="same")
    512
    """
    _check_padding(padding)
    step = 2**depth
    first = _first_valid(depth, padding)
    if size <= first:
        return first
    return first + -(-(size - first) // step) * step


def previous_valid_size(size: int, depth: int = 4, padding: str = VALID) -> int | None:
    """Largest valid input size of one axis that is <= ``size`` (None if there is none)."""
    sizes = valid_sizes(size, depth, padding)
    return sizes[-1] if sizes else None


def _nearest(size: int, depth: int, padding: str) -> tuple[int | None, int]:
    return previous_valid_size(size, depth, padding), next_valid_size(size, depth, padding)


def check_input_shape(shape: Sequence[int], depth: int = 4, padding: str = VALID) -> None:
    """Raise ``ValueError`` naming the nearest valid sizes if any axis of ``shape`` is invalid.

    Examples
    --------
    >>> check_input_shape((572, 572))
    >>> check_input_shape((570, 572))
    Traceback (most recent call last):
    ...
    ValueError: input size 570 (axis 0) is not valid for a valid-padded U-Net of depth 4: nearest valid sizes are 556 and 572
    """
    for axis, size in enumerate(shape):
        if not is_valid_size(int(size), depth, padding):
            lo, hi = _nearest(int(size), depth, padding)
            near = f"{lo} and {hi}" if lo is not None else f"{hi} (the smallest)"
            raise ValueError(
                f"input size {size} (axis {axis}) is not valid for a {padding}-padded U-Net of "
                f"depth {depth}: nearest valid sizes are {near}"
            )


def output_shape(input_shape: Sequence[int], depth: int = 4, padding: str = VALID) -> tuple[int, ...]:
    """Spatial output shape for a spatial input shape.

    Examples
    --------
    >>> output_shape((572, 572))
    (388, 388)
    >>> output_shape((700, 700))
    (516, 516)
    >>> output_shape((64, 96), padding="same")
    (64, 96)
    """
    check_input_shape(input_shape, depth, padding)
    h = halo(depth, padding)
    return tuple(int(s) - 2 * h for s in input_shape)


def input_shape_for(out_shape: Sequence[int], depth: int = 4, padding: str = VALID) -> tuple[int, ...]:
    """Spatial input shape that produces exactly ``out_shape``.

    Raises ``ValueError`` (naming the nearest valid output sizes) if no input gives that output.

    Examples
    --------
    >>> input_shape_for((388, 388))
    (572, 572)
    """
    h = halo(depth, padding)
    result = []
    for axis, size in enumerate(out_shape):
        size = int(size)
        if not is_valid_size(size + 2 * h, depth, padding):
            lo, hi = _nearest(size + 2 * h, depth, padding)
            near = [s - 2 * h for s in (lo, hi) if s is not None]
            raise ValueError(
                f"output size {size} (axis {axis}) cannot be produced by a {padding}-padded U-Net of "
                f"depth {depth}: nearest valid output sizes are {' and '.join(map(str, near))}"
            )
        result.append(size + 2 * h)
    return tuple(result)


def output_size_choices(max_input: int, depth: int = 4, padding: str = VALID, count: int = 5) -> list[tuple[int, int]]:
    """Up to ``count`` ``(input, output)`` tile-size pairs spread evenly over the valid sizes.

    Examples
    --------
    >>> output_size_choices(572, count=3)
    [(188, 4), (380, 196), (572, 388)]
    """
    sizes = valid_sizes(max_input, depth, padding)
    if len(sizes) > count:
        last = len(sizes) - 1
        sizes = [sizes[round(i * last / (count - 1))] for i in range(count)] if count > 1 else sizes[-1:]
    h = halo(depth, padding)
    return [(s, s - 2 * h) for s in sizes]
