#!/usr/bin/env python3
"""PyTorch side of `cargo xtask bench --torch <python>`: the same networks, weights and inputs as
segdiff's side, timed in this process while the xtask times its own, run by run in turn.

Two modes:

  torch_bench.py worker --threads N
      A persistent worker. Reads one JSON command per line on stdin and answers one JSON line on
      stdout (anything the libraries print goes to stderr, so stdout carries only answers):
        {"cmd": "hello"}                         -> versions, thread settings
        {"cmd": "load", "kind": K, "model": P, "inputs": F, ...}
            K = "unet_forward" | "unet_train"    (P: a diffusers model folder)
              | "monai_forward"                  (P: a safetensors state_dict, plus "monai": {args})
            F: safetensors with "x" (and "t" for the UNet, "target" for training)
        {"cmd": "run", "save": F?}               -> {"seconds": s, ...}; a forward writes its output
                                                    to F as "out" when asked; a training step
                                                    answers its loss and pre-clip gradient norm
        {"cmd": "quit"}
      Every answer has "ok"; a failure answers {"ok": false, "error": "..."} and the worker goes on.

  torch_bench.py peak --threads N --model P --inputs F
      Loads the diffusers model, runs two forwards under no_grad and prints one JSON line with the
      process's peak RSS (VmHWM) and its RSS before the first forward. Meant for a fresh process.

A training step is what the segdiff trainer does: forward, MSE loss against "target", backward,
clip_grad_norm_(1.0), AdamW(lr 1e-4, torch's other defaults), as diffusers' training scripts do.
"""
import argparse
import gc
import json
import os
import sys
import time

PIP_HINT = "pip install torch diffusers monai safetensors"


def _protocol_stdout():
    """Keeps the real stdout for answers and points `print` (ours and the libraries') at stderr."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr
    return out


def _import_libraries():
    try:
        import diffusers  # noqa: F401
        import monai  # noqa: F401
        import safetensors  # noqa: F401
        import torch  # noqa: F401
    except ImportError as e:
        return f"{sys.executable} lacks a package ({e}); install with: {PIP_HINT}"
    return None


def _rss_mib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return None


def _set_threads(n):
    import torch

    torch.set_num_threads(n)


def _versions():
    import diffusers
    import monai
    import safetensors
    import torch

    backend = next(
        (line.split(":", 1)[1].strip() for line in torch.__config__.parallel_info().splitlines()
         if line.startswith("ATen parallel backend")),
        "unknown",
    )
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "monai": monai.__version__,
        "safetensors": safetensors.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "parallel_backend": backend,
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "mkl": bool(torch.backends.mkl.is_available()),
    }


class Case:
    """One loaded configuration; `run` does one timed unit of work."""

    def __init__(self, msg):
        import torch
        from safetensors.torch import load_file

        self.kind = msg["kind"]
        inputs = load_file(msg["inputs"])
        self.x = inputs["x"].contiguous()
        if self.kind in ("unet_forward", "unet_train"):
            from diffusers import UNet2DModel

            # low_cpu_mem_usage=False: the plain load path, without asking for `accelerate`.
            self.model = UNet2DModel.from_pretrained(msg["model"], low_cpu_mem_usage=False)
            self.t = inputs["t"]
        elif self.kind == "monai_forward":
            from monai.networks.nets import UNet

            args = msg["monai"]
            self.model = UNet(
                spatial_dims=2,
                in_channels=args["in_channels"],
                out_channels=args["out_channels"],
                channels=tuple(args["channels"]),
                strides=tuple(args["strides"]),
                num_res_units=args["num_res_units"],
            )
            # strict: every name of our VarBuilder paths must be a MONAI state_dict name.
            self.model.load_state_dict(load_file(msg["model"]), strict=True)
        else:
            raise ValueError(f"unknown kind {self.kind!r}")
        self.model.float()
        if self.kind == "unet_train":
            self.model.train()
            self.target = inputs["target"].contiguous()
            self.params = [p for p in self.model.parameters() if p.requires_grad]
            self.opt = torch.optim.AdamW(self.params, lr=1e-4)
        else:
            self.model.eval()

    def _forward(self):
        if self.kind == "monai_forward":
            return self.model(self.x)
        return self.model(self.x, self.t).sample

    def run(self, save):
        import torch
        import torch.nn.functional as F

        answer = {}
        if self.kind == "unet_train":
            start = time.perf_counter()
            self.opt.zero_grad(set_to_none=True)
            loss = F.mse_loss(self._forward(), self.target)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.opt.step()
            answer["seconds"] = time.perf_counter() - start
            answer["loss"] = float(loss.detach())
            answer["grad_norm"] = float(norm)
        else:
            with torch.no_grad():
                start = time.perf_counter()
                out = self._forward()
                answer["seconds"] = time.perf_counter() - start
            if save:
                from safetensors.torch import save_file

                save_file({"out": out.contiguous()}, save)
        return answer


def worker(threads):
    out = _protocol_stdout()

    def answer(obj):
        out.write(json.dumps(obj) + "\n")
        out.flush()

    missing = _import_libraries()
    if missing:
        answer({"ok": False, "error": missing, "missing_package": True})
        return 3
    _set_threads(threads)
    case = None
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            msg = json.loads(line)
            cmd = msg.get("cmd")
            if cmd == "hello":
                answer({"ok": True, **_versions()})
            elif cmd == "load":
                case = None
                gc.collect()
                case = Case(msg)
                answer({"ok": True})
            elif cmd == "run":
                if case is None:
                    raise RuntimeError("run before load")
                answer({"ok": True, **case.run(msg.get("save"))})
            elif cmd == "quit":
                answer({"ok": True})
                return 0
            else:
                raise ValueError(f"unknown command {cmd!r}")
        except Exception as e:  # answer and go on: the xtask decides whether to stop
            answer({"ok": False, "error": f"{type(e).__name__}: {e}"})
    return 0


def peak(threads, model, inputs):
    out = _protocol_stdout()
    missing = _import_libraries()
    if missing:
        out.write(json.dumps({"ok": False, "error": missing, "missing_package": True}) + "\n")
        return 3
    _set_threads(threads)
    import torch
    from diffusers import UNet2DModel
    from safetensors.torch import load_file

    tensors = load_file(inputs)
    net = UNet2DModel.from_pretrained(model, low_cpu_mem_usage=False).float().eval()
    rss_loaded = _rss_mib("VmRSS")
    with torch.no_grad():
        for _ in range(2):
            net(tensors["x"], tensors["t"])
    out.write(json.dumps({"ok": True, "peak_rss_mib": _rss_mib("VmHWM"),
                          "rss_loaded_mib": rss_loaded}) + "\n")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="mode", required=True)
    w = sub.add_parser("worker")
    w.add_argument("--threads", type=int, required=True)
    k = sub.add_parser("peak")
    k.add_argument("--threads", type=int, required=True)
    k.add_argument("--model", required=True)
    k.add_argument("--inputs", required=True)
    a = p.parse_args()
    if a.mode == "worker":
        return worker(a.threads)
    return peak(a.threads, a.model, a.inputs)


if __name__ == "__main__":
    sys.exit(main())
