"""`cnnlab serve RUN_DIR|MODEL_FILE`: a trained model behind an HTTP API and a web page (FastAPI + uvicorn).

    POST /v1/predict   multipart field `file` (repeated), ?top_k=N  →  {"model": ..., "predictions":
                       [{"file": NAME, "top_k": [{"label": ..., "prob": ...}, ...]}, ...]}   (a contract)
                       ?coverage=0.9 adds each prediction's "set" (the conformal set's labels, most likely first);
                       ?reject_rate=0.05 adds "decision" (the top label, or "unknown") and "unknown" (true/false);
                       a multi-label model's predictions add "labels" (the set at or above each class's
                       threshold, most likely first) beside "top_k" (each class's sigmoid probability)
    POST /v1/gradcam   one `file`  →  a PNG: the image with the Grad-CAM map of its top class over it
    GET  /v1/model     classes, preprocessing, the run's test figures, the engine
    GET  /healthz      {"status": "ok"}
    GET  /             a page to pick or drop photos and see the top-5 (no CDN: it works offline)
    GET  /docs         OpenAPI documentation (FastAPI's)

The model is loaded once. Uploads are decoded and resized exactly as `cnnlab predict` does
(`data.streaming.decode_image`), so the probabilities are the same. Concurrent requests are
batched: a request's images wait at most `max_wait_ms` for others to join them (up to `max_batch`
images), then one forward serves them all, in one worker thread, so throughput grows with load
while a lone request pays a few milliseconds. Bad input is a 4xx JSON error naming the problem —
not an image, truncated, too many bytes or pixels, too many files, a wrong field — and the server
keeps serving; uploaded file names are only echoed, never used as paths.
"""
# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations as types.
import asyncio
import io
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

import cnnlab.layout as layout
from cnnlab.config import ModelSpec
from cnnlab.data.streaming import decode_image
from cnnlab.errors import CnnlabError, ConfigError, DataError
from cnnlab.inference.trained import TrainedModel, load_trained

PAGE = Path(__file__).with_name("serve_page.html")


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 10 * 1024 * 1024  # per file
    max_pixels: int = 40_000_000  # declared width × height, checked before decoding
    max_files: int = 16  # per request
    max_top_k: int = 100


def _fastapi():
    try:
        import fastapi  # noqa: F401
        import multipart  # noqa: F401  (python-multipart: FastAPI's form parser)
        import uvicorn  # noqa: F401
    except ImportError:
        raise ConfigError("cnnlab serve needs the optional extra: pip install 'cnnlab[serve]' "
                          "(fastapi, uvicorn, python-multipart)") from None


class Batcher:
    """Requests' images gathered into batches: at most `max_wait_ms` of waiting, at most `max_batch` images."""

    def __init__(self, model: TrainedModel, *, max_batch: int = 32, max_wait_ms: float = 10.0):
        self.model, self.max_batch, self.max_wait = model, max_batch, max_wait_ms / 1000
        self.queue: asyncio.Queue | None = None
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cnnlab-model")  # one forward at a time
        self.task: asyncio.Task | None = None
        self.batches = 0

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
        self.worker.shutdown(wait=False, cancel_futures=True)

    async def logits(self, images: torch.Tensor) -> torch.Tensor:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((images, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            count = len(items[0][0])
            deadline = loop.time() + self.max_wait
            while count < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
                items.append(item)
                count += len(item[0])
            batch = torch.cat([images for images, _ in items])
            try:
                logits = await loop.run_in_executor(self.worker, self.model.batch_logits, batch)
            except Exception as exc:  # a failed forward answers its requests; the loop keeps serving
                for _, future in items:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            start = 0
            for images, future in items:
                if not future.done():
                    future.set_result(logits[start:start + len(images)].cpu())
                start += len(images)


def model_card(model: TrainedModel) -> dict:
    record = model.record
    card = {"model": record.get("experiment", record["model"]), "architecture": record["model"],
            "backbone": ModelSpec.of(record["model"], record.get("model_args")).backbone, "classes": model.class_names,
            "input_size": list(model.input_size), "engine": model.engine, "tta": model.tta,
            "preprocessing": {k: record.get(k) for k in ("resize", "crop_ratio", "interpolation", "mean", "std")},
            "source": model.source.name}
    if model.multilabel:  # several labels an image: the thresholds "labels" are decided at
        card["task"] = "multilabel"
        card["thresholds"] = dict(zip(model.class_names, model.record["thresholds"]))
    if model.trust is not None:  # what ?coverage and ?reject_rate answer with (trust/)
        trust = model.trust
        card["calibration"] = {"calibration": trust.calibration, "temperature": trust.temperature,
                               "fitted_on": trust.fitted_on, "conformal_score": trust.conformal_score,
                               "conformal_on": trust.conformal_on, "reject_score": trust.reject_score}
    results = model.source.parent / layout.RESULTS_FILE
    if results.is_file():
        from cnnlab.studies.layout import read_results

        run = read_results(results)  # a damaged file: one RunError naming it and the field, answered as JSON
        keys = (("test_map", "test_micro_f1", "test_macro_f1", "final_val_map", "best_val_map") if model.multilabel
                else ("test_acc", "final_val_acc", "best_val_acc"))
        card["metrics"] = {k: run.get(k) for k in (*keys, "test_loss", "epochs", "seed", "num_train", "num_test")}
    return card


MAX_FILENAME = 255  # characters of an upload's file name (most file systems' limit)


def create_app(source: str | Path, *, engine: str = "auto", max_batch: int = 32, max_wait_ms: float = 10.0,
               limits: Limits = Limits(), model: TrainedModel | None = None, seed: int | None = None):
    """The FastAPI application serving the model at `source` (loaded once, here)."""
    _fastapi()
    from fastapi import FastAPI, File, Query, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException

    model = model or load_trained(source, seed=seed, device="cpu", engine=engine, choose="--seed S")
    name = model.record.get("experiment", model.record["model"])
    batcher = Batcher(model, max_batch=max_batch, max_wait_ms=max_wait_ms)
    size = model.input_size[1]
    resizing = (model.record.get("resize", "stretch"), model.record.get("crop_ratio", 0.875),
                model.record.get("interpolation", "bilinear"))

    class BadInput(Exception):
        def __init__(self, status: int, message: str):
            super().__init__(message)
            self.status, self.message = status, message

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_app):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title=f"cnnlab: {name}", version="1", lifespan=lifespan,
                  description=f"{len(model.class_names)} classes, {model.engine} engine. POST images to /v1/predict.")

    @app.exception_handler(BadInput)
    async def bad_input(_request, exc: BadInput):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(map(str, e.get('loc', [])))}: {e.get('msg')}" for e in exc.errors())
        return JSONResponse({"error": f"bad request: {problems} (send images as multipart field 'file')"},
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, exc: StarletteHTTPException):
        # the router's own headers go along: a 405 carries `Allow`, as HTTP clients expect
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(CnnlabError)
    async def damaged_file(_request, exc: CnnlabError):
        # a run file that changed or broke under a running server: said as JSON, as every other error
        return JSONResponse({"error": str(exc)}, status_code=500)

    @app.exception_handler(Exception)
    async def unexpected(_request, exc: Exception):
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); the server log has the details"},
                            status_code=500)

    # The query parameters each endpoint takes, read from the routes below once they exist: any other (a
    # misspelt `topk`) is a 422 naming it, not silently ignored.
    query_parameters: dict[str, list[str]] = {}

    @app.middleware("http")
    async def known_query_parameters(request, call_next):
        takes = query_parameters.get(request.url.path, [])
        unknown = sorted(set(request.query_params) - set(takes))
        if unknown:
            return JSONResponse({"error": f"unknown query parameter {', '.join(repr(u) for u in unknown)}; "
                                          f"{request.url.path} takes " + (", ".join(takes) if takes else "none")},
                                status_code=422)
        return await call_next(request)

    async def decoded(files: list[UploadFile]) -> tuple[torch.Tensor, list[str]]:
        if not files:
            raise BadInput(422, "no file: send one or more images as multipart field 'file'")
        if len(files) > limits.max_files:
            raise BadInput(413, f"{len(files)} files: at most {limits.max_files} a request")
        tensors, names = [], []
        for upload in files:
            label = upload.filename or "upload"
            if len(label) > MAX_FILENAME:
                raise BadInput(400, f"{label[:60]}…: a file name of {len(label):,} characters; at most {MAX_FILENAME}")
            data = await upload.read(limits.max_bytes + 1)
            if len(data) > limits.max_bytes:
                raise BadInput(413, f"{label}: more than {limits.max_bytes:,} bytes")
            if not data:
                raise BadInput(400, f"{label}: empty file")
            try:
                tensors.append(decode_image(io.BytesIO(data), size, *resizing, name=label,
                                            max_pixels=limits.max_pixels))
            except DataError as exc:
                status = 413 if "pixels" in str(exc) else 400
                raise BadInput(status, str(exc)) from None
            names.append(label)
        return torch.stack(tensors), names

    @app.api_route("/healthz", methods=["GET", "HEAD"])
    async def healthz():
        return {"status": "ok", "batches": batcher.batches}

    @app.api_route("/v1/model", methods=["GET", "HEAD"])
    async def describe():
        return model_card(model)

    @app.post("/v1/predict")
    async def predict(file: list[UploadFile] = File(default=None),
                      top_k: int = Query(5, ge=1),
                      coverage: float = Query(None, gt=0.0, lt=1.0),
                      reject_rate: float = Query(None, ge=0.0, lt=1.0)):
        if (coverage is not None or reject_rate is not None) and model.multilabel:
            raise BadInput(409, "coverage and reject_rate are a single-label model's; this multi-label model answers "
                                "each image's labels (above the thresholds chosen on its validation split)")
        if (coverage is not None or reject_rate is not None) and model.trust is None:
            raise BadInput(409, "this model's record holds no calibration scores (trained by cnnlab before 0.13, or "
                                "without a validation split): it cannot answer coverage or reject_rate")
        images, names = await decoded(file or [])
        k = min(top_k, limits.max_top_k, len(model.class_names))
        logits = await batcher.logits(images)
        probs = model.logits_to_probabilities(logits)
        values, index = probs.topk(k, dim=1)
        answers = [{"file": n, "top_k": [{"label": model.class_names[i], "prob": float(p)}
                                         for p, i in zip(v.tolist(), ix.tolist())]}
                   for n, v, ix in zip(names, values, index)]
        if model.multilabel:
            for answer, labels in zip(answers, model.labels_of(probs)):
                answer["labels"] = labels
        if coverage is not None:
            for answer, members in zip(answers, model.trust.sets(probs, coverage)):
                answer["set"] = [model.class_names[i] for i in members]
        if reject_rate is not None:
            for answer, accepted in zip(answers, model.trust.accepted(logits, reject_rate)):
                answer["unknown"] = not bool(accepted)
                answer["decision"] = answer["top_k"][0]["label"] if accepted else "unknown"
        return {"model": name, "predictions": answers}

    @app.post("/v1/gradcam", responses={200: {"content": {"image/png": {}}}})
    async def explain(file: list[UploadFile] = File(default=None)):
        if model.model is None:
            raise BadInput(409, "Grad-CAM needs the PyTorch model: serve the run folder, not an exported graph")
        images, _ = await decoded((file or [])[:1])
        png = await asyncio.get_running_loop().run_in_executor(batcher.worker, _gradcam_png, model, images)
        return Response(png, media_type="image/png")

    @app.api_route("/favicon.ico", methods=["GET", "HEAD"], include_in_schema=False)
    async def favicon():
        return Response(status_code=204)

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
    async def page():
        return PAGE.read_text(encoding="utf-8").replace("{{TITLE}}", _html_escape(name))

    from fastapi.routing import APIRoute

    query_parameters.update({route.path: [p.alias for p in route.dependant.query_params]
                             for route in app.routes if isinstance(route, APIRoute)})

    return app


def _html_escape(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def _gradcam_png(model: TrainedModel, images: torch.Tensor) -> bytes:
    """The first image with its Grad-CAM map (of the predicted class) blended over it, as PNG bytes."""
    import numpy as np
    from matplotlib import colormaps
    from PIL import Image

    from cnnlab.inference.gradcam import gradcam

    maps, _ = gradcam(model, images[:1])
    heat = colormaps["jet"](maps[0].numpy())[..., :3]
    picture = images[0].permute(1, 2, 0).numpy() / 255.0
    blended = (0.55 * picture + 0.45 * heat).clip(0, 1)
    buffer = io.BytesIO()
    Image.fromarray((blended * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _port_free(host: str, port: int) -> None:
    """One line (exit 2) when the address cannot be had, before anything says "serving"."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a TIME_WAIT port is free
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"--port {port}: cannot listen on {host}:{port} ({exc.strerror or exc}); "
                              "another server holds it: stop it or choose another --port") from None


def serve(source: str | Path, *, host: str = "127.0.0.1", port: int = 8000, engine: str = "auto", workers: int = 1,
          max_batch: int = 32, max_wait_ms: float = 10.0, seed: int | None = None, log=print) -> None:
    """Run the server until Ctrl-C (uvicorn). Several workers are processes, each with its own model."""
    _fastapi()
    import os

    import uvicorn

    if workers < 1 or not 0 < port < 65536 or max_batch < 1 or max_wait_ms < 0:
        raise ConfigError("--workers >= 1, --port in 1..65535, --max-batch >= 1 and --max-wait-ms >= 0")
    # a bad path, seed or engine fails here, in one line
    model = load_trained(source, seed=seed, device="cpu", engine=engine, choose="--seed S")
    _port_free(host, port)
    log(f"serving {model.source} ({len(model.class_names)} classes, {model.engine} engine) on http://{host}:{port}/ "
        f"(API docs: /docs); Ctrl-C stops")
    if workers == 1:
        uvicorn.run(create_app(source, engine=engine, max_batch=max_batch, max_wait_ms=max_wait_ms, model=model),
                    host=host, port=port, log_level="warning")
        return
    os.environ["CNNLAB_SERVE"] = json.dumps({"source": str(source), "engine": engine, "max_batch": max_batch,
                                             "max_wait_ms": max_wait_ms, "seed": seed})
    uvicorn.run("cnnlab.inference.serve:app_from_environment", factory=True, host=host, port=port,
                workers=workers, log_level="warning")


def app_from_environment():
    """uvicorn's factory for each worker process: the settings `serve` left in $CNNLAB_SERVE."""
    import os

    settings = json.loads(os.environ["CNNLAB_SERVE"])
    return create_app(settings["source"], engine=settings["engine"], max_batch=settings["max_batch"],
                      max_wait_ms=settings["max_wait_ms"], seed=settings.get("seed"))


__all__ = ["Batcher", "Limits", "create_app", "model_card", "serve"]
