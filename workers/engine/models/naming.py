"""Which of a model's declared tensors are u, h and the next state (formats that name their tensors).

ONNX graphs and SavedModel signatures declare named inputs and outputs. The input u
and the state h are found by name, or named at upload, or by elimination when one of
two is known; a model that leaves them ambiguous is refused with a message that says
how to name them.
"""

from __future__ import annotations

from collections.abc import Mapping

from fpf_client.errors import InvalidModel

INPUT_NAMES = ("u", "inputs", "input")
STATE_NAMES = ("h", "state", "hidden")
OUTPUT_NAMES = ("h_next", "state_next", "next_state")


def assign_roles(
    shapes: Mapping[str, str], *, input_name: str | None, state_name: str | None, how: str
) -> tuple[str | None, str]:
    """(input name or None for an autonomous model, state name) among the declared inputs.

    Parameters
    ----------
    shapes : declared input name -> its shape as text, in declaration order.
    input_name, state_name : names given at upload, if any.
    how : the sentence telling the user how to name the tensors in their format.
    """
    described = ", ".join(f"{name!r} {shape}" for name, shape in shapes.items())
    for given in (input_name, state_name):
        if given is not None and given not in shapes:
            raise InvalidModel(f"the model has no input {given!r}; its inputs are {described}")
    state_name = state_name or _by_alias(shapes, STATE_NAMES, exclude=input_name)
    input_name = input_name or _by_alias(shapes, INPUT_NAMES, exclude=state_name)
    others = [name for name in shapes if name not in (input_name, state_name)]
    if len(shapes) == 2 and len(others) == 1 and (input_name or state_name):
        input_name, state_name = input_name or others[0], state_name or others[0]
    elif len(shapes) == 1 and input_name is None:
        state_name = state_name or others[0]
    if state_name is None or input_name == state_name or len(shapes) > 2 or (len(shapes) == 2 and not input_name):
        raise InvalidModel(f"cannot tell the input u from the state h among the model inputs {described}. {how}")
    return input_name, state_name


def pick_output(names: list[str], output_name: str | None, *, last_by_default: bool = False) -> str:
    """The output holding the next state: the given name, the only output, the one named h_next (etc.),
    or with ``last_by_default`` (ordered outputs, as torch tuples) the last one."""
    if output_name is not None:
        if output_name not in names:
            raise InvalidModel(
                f"the model has no output {output_name!r}; its outputs are {', '.join(map(repr, names))}"
            )
        return output_name
    if len(names) == 1:
        return names[0]
    named = [name for name in names if name.lower() in OUTPUT_NAMES]
    if len(named) == 1:
        return named[0]
    if last_by_default:
        return names[-1]
    raise InvalidModel(
        f"the model has outputs {', '.join(map(repr, names))}: name the next state h_next, or name it at upload"
    )


#: The one-sentence fix for a size hint that contradicts the model.
SIZE_HINT_FIX = {
    "n_states": "leave the hint out (fpf reads the size off the model) or count every part of the packed "
    "state (an LSTM's [h, c] has 2·H entries per layer, a stack of L layers L times as many)",
    "n_inputs": "leave the hint out (fpf reads the size off the model) or give the size of one time step's input",
}


def check_size_hints(actual_states: int, actual_inputs: int, *, n_states: int | None, n_inputs: int | None) -> None:
    """Refuse upload hints that contradict the sizes a model declares."""
    for name, hint, actual in (("n_states", n_states, actual_states), ("n_inputs", n_inputs, actual_inputs)):
        if hint is not None and hint != actual:
            raise InvalidModel(f"{name}={hint} was given, but the model declares {actual}: {SIZE_HINT_FIX[name]}")


def _by_alias(shapes: Mapping[str, str], aliases: tuple[str, ...], exclude: str | None) -> str | None:
    matches = [name for name in shapes if name.lower() in aliases and name != exclude]
    return matches[0] if len(matches) == 1 else None


__all__ = [
    "INPUT_NAMES",
    "OUTPUT_NAMES",
    "SIZE_HINT_FIX",
    "STATE_NAMES",
    "assign_roles",
    "check_size_hints",
    "pick_output",
]
