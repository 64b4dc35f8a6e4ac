"""What the command-line tools of ``tools/`` share; not part of the mmaqd library (no config or model needs it).

* :mod:`.stages`: the one table of benchmark stages (configs and the FP stage each fine-tunes from), read by
  ``tools/pipeline.py`` and ``tools/benchmark/accuracy.py``;
* :mod:`.experiment`: train-then-test stages through mmengine's Runner, markdown tables, machine info, the
  generated dataset on demand;
* :mod:`.models`: a config's model built on the CPU (tools and tests);
* :mod:`.checkpoint_io`, :mod:`.config_text`, :mod:`.model_convention`: the checkpoint converters' argument
  handling, reading a checkpoint's config text without running it, and what weights assume beyond their keys;
* :mod:`.work_dir_guard`: ``tools/train.py``'s refusal to overwrite a work dir.

The scripts import it with ``tools/`` on ``sys.path`` (a script directly in ``tools/`` has it there already; one in a
subfolder appends it), and so do the tests (``tests/conftest.py``).
"""
