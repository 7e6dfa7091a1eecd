import sys
from pathlib import Path

# naive_siddon.py is a helper module next to the tests (tests are collected with --import-mode=importlib).
sys.path.insert(0, str(Path(__file__).parent))
