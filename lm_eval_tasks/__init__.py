"""lm-eval tasks of the DoRA paper's commonsense suite: group ``dora_commonsense`` and eight ``dora_*`` tasks.

This folder is an lm-eval task folder (YAMLs, ``utils.py``, ``filters.py``, README.md). The stock
``lm_eval`` command finds it through the startup hook in ``startup.py``; keep this file empty of
imports, as that hook imports it at every interpreter start-up.
"""
