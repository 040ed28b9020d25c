import param
import pytest

from innerssl.containers.base import Container
from innerssl.errors import UserError


class Example(Container):
    flag: bool = param.Boolean(False, doc="A switch.")
    count: int = param.Integer(3, bounds=(1, 10), doc="How many.")
    ratio: float = param.Number(0.5, doc="A ratio.")
    choice: str = param.Selector(objects=["a", "b"], default="a", doc="Pick one.")
    names: list = param.List([], item_type=str, doc="Some names.")
    optional: str | None = param.String(None, allow_None=True, doc="Maybe a path.")


class ThinConfig(Example):
    count = 7
    choice = "b"


def test_flags_are_parsed_into_parameter_types():
    container = Example()
    container.apply_flags(
        {"flag": None, "count": "5", "ratio": "1e-3", "choice": "b", "names": "x, y,", "optional": "/data"}
    )
    assert container.flag is True
    assert container.count == 5
    assert container.ratio == pytest.approx(1e-3)
    assert container.choice == "b"
    assert container.names == ["x", "y"]
    assert container.optional == "/data"
    container.apply_flags({"flag": "false", "optional": "None"})
    assert container.flag is False and container.optional is None


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"cuont": "2"}, "Unknown parameter --cuont for Example. Did you mean --count?"),
        ({"count": "two"}, "--count expects an integer, got 'two'"),
        ({"ratio": "half"}, "--ratio expects a number"),
        ({"flag": "maybe"}, "--flag expects true or false"),
        ({"choice": "c"}, "Allowed values: a, b"),
        ({"count": "11"}, "--count=11 is not valid"),
        ({"count": None}, "--count needs a value"),
    ],
)
def test_bad_flags_give_one_line_errors(flags, expected):
    with pytest.raises(UserError) as error:
        Example().apply_flags(flags)
    assert expected in str(error.value)
    assert "\n" not in str(error.value)


def test_thin_subclass_values_show_in_help_and_config():
    container = ThinConfig()
    assert container.count == 7 and container.choice == "b"
    assert container.config_dict()["count"] == 7
    text = ThinConfig.help_text()
    assert "--count (int, default: 7)" in text
    assert "How many." in text
    assert "--num_epochs" in text  # inherited run-level parameters are flags too


def test_thin_config_values_keep_checks_and_docs():
    container = ThinConfig()
    with pytest.raises(UserError, match="--count=11 is not valid"):
        container.apply_flags({"count": "11"})
    assert ThinConfig.param["count"].doc == "How many."
    assert Example().count == 3  # the base default is untouched
    with pytest.raises(ValueError, match="must be at most 10"):

        class Broken(Example):
            count = 50
