"""pytest plugin of ``tools/peft_suite.py``'s routed run: every ``LoraConfig(use_dora=True)`` uses our layer.

pytest imports ``-p`` plugins before it collects, so routing is on before any test module is imported and
configs built at import time (PEFT's ``test_torch_compile.py`` builds its ``SETTINGS`` there) are routed too.
"""

import dora_plugins

dora_plugins.route_peft(True)
