import sys
from pathlib import Path

# the tiny random AstroVLM and its tokenizer fixture live with the model's tests
sys.path.insert(0, str(Path(__file__).parents[1] / "vlm"))
