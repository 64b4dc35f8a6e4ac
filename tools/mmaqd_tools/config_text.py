"""Reading the config text that a checkpoint carries, without running it.

mmengine writes the run's config into every checkpoint (``meta['cfg']``, the config's ``pretty_text``), mmdet 2.x /
mmcv into ``meta['config']``. Config text is Python: ``Config.fromstring`` would execute it, i.e. run code that
came with a downloaded file, which the converters' ``torch.load(weights_only=True)`` exists to avoid.
:func:`literal_config` instead evaluates only literals: top-level ``name = value`` assignments whose value is built
from constants, lists, tuples, dicts, ``dict(...)`` calls, unary minus, arithmetic on numbers and names assigned
before. Anything else (other calls, attributes, imports, lazy-config objects) is kept as an :class:`Opaque`
holding its source text and is never run.
"""
import ast
import operator
from typing import Any, Dict, Mapping, Optional, Tuple

#: the ``meta`` keys that hold a checkpoint's config text: mmengine (mmdet 3.x), then mmcv (mmdet 2.x)
META_KEYS = ('cfg', 'config')

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}


class Opaque(str):
    """A value that is not a literal (its source text); compares unequal to every literal."""

    def __repr__(self) -> str:
        return f'<not a literal: {str(self)}>'


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _eval(node: ast.AST, names: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_eval(e, names) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict):
        out = {}
        for k, v in zip(node.keys, node.values):
            if k is None:  # {**other}
                other = _eval(v, names)
                if not isinstance(other, dict):
                    return Opaque(ast.unparse(node))
                out.update(other)
            else:
                key = _eval(k, names)
                if isinstance(key, Opaque) or not isinstance(key, (str, int, float, bool, tuple, type(None))):
                    return Opaque(ast.unparse(node))
                out[key] = _eval(v, names)
        return out
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'dict' and not node.args:
        out = {}
        for kw in node.keywords:
            value = _eval(kw.value, names)
            if kw.arg is not None:
                out[kw.arg] = value
            elif isinstance(value, dict):  # dict(**other)
                out.update(value)
            else:
                return Opaque(ast.unparse(node))
        return out
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _eval(node.operand, names)
        if _number(value):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left, names), _eval(node.right, names)
        if _number(left) and _number(right):
            try:
                return _BINOPS[type(node.op)](left, right)
            except (ArithmeticError, ValueError):
                pass
    if isinstance(node, ast.Name) and node.id in names:
        return names[node.id]
    return Opaque(ast.unparse(node))


def literal_config(text: str) -> Dict[str, Any]:
    """The top-level ``name = literal`` assignments of config ``text``, nothing executed.

    Raises ``ValueError`` naming the line when ``text`` is not Python.
    """
    try:
        tree = ast.parse(text)
    except SyntaxError as e:
        raise ValueError(f'the config text is not Python (line {e.lineno}: {e.msg})') from None
    names: Dict[str, Any] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            names[stmt.targets[0].id] = _eval(stmt.value, names)
    return names


def checkpoint_config(meta: Optional[Mapping[str, Any]]) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """``(literal config, where)`` of the config text in a checkpoint's ``meta`` (``where``: ``"meta['cfg']"`` or
    ``"meta['config']"``), or ``(None, None)`` when it carries none."""
    for key in META_KEYS:
        text = (meta or {}).get(key)
        if isinstance(text, str) and text.strip():
            return literal_config(text), f"meta['{key}']"
    return None, None
