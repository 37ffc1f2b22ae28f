import pytest

from unetseg import sizes


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_input_output_round_trip(depth):
    for size in sizes.valid_sizes(800, depth):
        (out,) = sizes.output_shape((size,), depth)
        assert out >= 1
        assert sizes.input_shape_for((out,), depth) == (size,)
        assert size - out == 2 * sizes.halo(depth)


def test_paper_numbers():
    assert sizes.output_shape((572, 572)) == (388, 388)
    assert sizes.output_shape((700, 700)) == (516, 516)
    assert sizes.halo() == 92
    assert sizes.input_shape_for((388, 388)) == (572, 572)


def test_invalid_size_names_nearest():
    with pytest.raises(ValueError, match="556 and 572"):
        sizes.output_shape((570, 572))
    with pytest.raises(ValueError, match="188"):
        sizes.check_input_shape((100,))
    with pytest.raises(ValueError, match="output size 389"):
        sizes.input_shape_for((389, 388))


def test_next_and_previous_valid():
    assert sizes.next_valid_size(572) == 572
    assert sizes.next_valid_size(573) == 588
    assert sizes.previous_valid_size(587) == 572
    assert sizes.previous_valid_size(100) is None
    assert sizes.next_valid_size(17, padding="same") == 32


def test_same_padding_sizes():
    assert sizes.output_shape((64, 128, 32), padding="same") == (64, 128, 32)
    with pytest.raises(ValueError):
        sizes.output_shape((65,), padding="same")
    with pytest.raises(ValueError):
        sizes.halo(4, "reflect")
