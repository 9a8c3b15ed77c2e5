"""lm-eval tasks of the DoRA paper's commonsense suite: groups ``dora_commonsense`` and ``dora_commonsense_mc``.

This folder is an lm-eval task folder (YAMLs, ``utils.py``, ``filters.py``, README.md): eight ``dora_*``
generation tasks and their eight ``dora_*_mc`` log-likelihood twins. The stock ``lm_eval`` command finds it
through the startup hook in ``startup.py``; keep this file empty of imports, as that hook imports it at
every interpreter start-up.
"""
