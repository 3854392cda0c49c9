"""The classification agent: frames in, one verdict per frame out.

A frame is pre-processed as it arrives (crop, resize, colour: frame errors go to the
dead-letter stream at once), queued, and judged with the others of its micro-batch in
one inference call. The model in use is one immutable ``Judge``; a newly deployed
version replaces it only while the queue is empty, so every batch, and therefore
every frame, is judged by exactly one model version.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import redis

from graphrun import (Agent, DeadLetter, Deployment, GraphrunError, Input, KeyGrant, Message, Output, RedisAccess,
                      RedisModule)
from graphrun_agents.errors import FrameFormatError, ModelError, PreprocessConfigError, RedisAIError
from graphrun_agents.messages import Frame, Verdict

from . import backends, redisai
from .model import DEFAULT_MODEL, ModelInfo, defect_scores, map_to_bytes, read_model, spec_for
from .params import ClassificationParams
from .preprocess import Preprocessor
from .versions import AGENT_COMMANDS, ModelVersions, instance_id, keys_of


@dataclass(frozen=True)
class Judge:
    """Everything that decides a verdict, swapped as one."""

    model: backends.LoadedModel
    version: str
    name: str
    preprocessor: Preprocessor
    threshold: float
    labels: tuple[str, str]
    frame_hw: tuple[int, int] | None  # fixed model input height, width (None: dynamic)


@dataclass
class _Queued:
    msg: Message
    image: np.ndarray  # cropped, resized, colour-converted
    preprocess_ms: float
    queued: float  # time.monotonic() when queued
    held: bool = False


class ClassificationAgent(Agent):
    """Classifies each frame as defective or not with a deep-learning model."""

    frames = Input(Frame)
    verdicts = Output(Verdict)
    Params = ClassificationParams
    params: ClassificationParams
    tick_interval = 0.2  # set per instance in start(): the version poll and the batch wait

    @classmethod
    def redis_access(cls, params: ClassificationParams, *, graph: str, agent: str, home: str) -> RedisAccess:
        """Its model versions (following deployments, registering its first model) and, where
        RedisAI may run it, MODULE LIST and the module's commands on its own models' keys."""
        grants = []
        if params.model_updates:
            grants.append(KeyGrant(params.registry_instance(home), AGENT_COMMANDS, (keys_of(agent),)))
        if params.redisai and params.backend != "onnxruntime":
            grants += [KeyGrant(params.redisai, ("module|list",)),
                       KeyGrant(params.redisai, redisai.COMMANDS, (f"{keys_of(agent)[:-1]}ai:*",))]
        return RedisAccess(grants=tuple(grants))

    @classmethod
    def deployment(cls, params: ClassificationParams) -> Deployment:
        """ONNX Runtime with a CUDA or TensorRT execution provider runs on the GPU; a model
        run by RedisAI needs the module on the instance ``params.redisai`` names."""
        gpu = any(name in provider.lower() for provider in params.providers for name in ("cuda", "tensorrt"))
        modules = {}
        if params.redisai and params.backend != "onnxruntime":
            modules[params.redisai] = RedisModule("RedisAI", redisai.IMAGES[params.device], redisai.MODULE_PATH,
                                                  gpu=params.device == "GPU")
        return Deployment(gpu=gpu, redis_modules=modules,
                          notes=("ONNX Runtime on the GPU (needs the NVIDIA container toolkit)",) if gpu else ())

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._queue: list[_Queued] = []
        self._judged = 0
        self._rejected = 0
        self._next_check = 0.0
        self._retry_at = 0.0
        self._unusable: str | None = None  # a deployed version that failed to load: not retried
        waits = [self.params.check_interval_ms] if self.params.model_updates else []
        if self.params.batch.max_size > 1 and self.params.batch.max_wait_ms > 0:
            waits.append(self.params.batch.max_wait_ms)
        self.tick_interval = max(min(waits, default=1000.0), 1.0) / 1000  # type: ignore[misc]
        self._instance = instance_id(self.name)
        self._backend, why = backends.choose_backend(self.params, self.redis)
        self.log.info("inference backend: %s (%s)", self._backend, why)
        self._ai = self.redis(self.params.redisai) if self._backend == "redisai" else None
        self._versions = self._open_versions()
        self._judge = self._initial_judge()
        self._announce()

    def stop(self) -> None:
        if getattr(self, "_queue", None):
            self.log.warning("stopping with %d queued frame(s); they stay pending and are redelivered", len(self._queue))
        if getattr(self, "_versions", None) is not None:
            try:
                self._versions.forget_running(self._instance)
            except redis.RedisError:
                pass

    # --- messages -----------------------------------------------------------------------

    def handle(self, msg: Message[Frame]) -> None:
        self.handle_batch([msg])

    def handle_batch(self, msgs: Sequence[Message]) -> None:
        """Queues the frames of one read and judges full batches (or all, without a wait).

        Every frame is pre-processed before any is queued: a bad frame raises DeadLetter
        with nothing changed, and the runtime then hands the frames over one by one.
        Inference failures never escape: the frames stay queued and held, and tick()
        tries them again, so no verdict is sent twice or lost.
        """
        if self._version_check_due() and (not self._queue or self._flush(len(self._queue))):
            self._follow_versions()  # between two batches: the queue is empty
        fresh = []
        for msg in msgs:
            started = time.perf_counter()
            image = self._prepare(msg)
            fresh.append(_Queued(msg, image, (time.perf_counter() - started) * 1000, time.monotonic()))
        self._queue.extend(fresh)
        size = self.params.batch.max_size
        while len(self._queue) >= size and self._flush(size):
            pass
        if self._queue and self.params.batch.max_wait_ms == 0:
            self._flush(len(self._queue))
        for q in self._queue:
            if not q.held:
                self.hold(q.msg)
                q.held = True

    def tick(self) -> None:
        now = time.monotonic()
        if not self._queue:
            if self._version_check_due():
                self._follow_versions()
        elif now >= self._retry_at and (now - self._queue[0].queued) * 1000 >= self.params.batch.max_wait_ms:
            while self._queue and self._flush(self.params.batch.max_size):
                pass

    def _prepare(self, msg: Message[Frame]) -> np.ndarray:
        judge = self._judge
        try:
            image = judge.preprocessor.resized(msg["image"])
        except KeyError:
            raise DeadLetter(f"frame of part {msg.get('part_id')!r} has no 'image'") from None
        except FrameFormatError as exc:
            raise DeadLetter(f"frame of part {msg.get('part_id')!r} from {msg.get('camera')!r}: {exc}") from exc
        if judge.frame_hw is not None and image.shape[:2] != judge.frame_hw:
            h, w = image.shape[:2]
            raise DeadLetter(
                f"frame of part {msg.get('part_id')!r} from {msg.get('camera')!r} is {w}x{h} after pre-processing; "
                f"model {judge.name} v{judge.version} takes {judge.frame_hw[1]}x{judge.frame_hw[0]} "
                "(set params.preprocess.resize or roi)"
            )
        return image

    def _flush(self, count: int) -> bool:
        """Judges the first ``count`` queued frames, sends their verdicts, releases the held ones.

        Returns False (and leaves the queue as it was) if inference failed.
        """
        judge = self._judge
        batch = self._queue[:count]
        try:
            results = self._infer(judge, [q.image for q in batch])
        except Exception as exc:  # noqa: BLE001 - the frames stay held; tick() tries again
            self._retry_at = time.monotonic() + 1.0
            self.status["inference_error"] = str(exc)
            self.log.error("inference of %d frame(s) failed, trying again in 1 s: %s", len(batch), exc)
            return False
        del self._queue[:count]
        for q, (score, normalise_ms, inference_ms, cells) in zip(batch, results):
            q.preprocess_ms += normalise_ms
            self.verdicts.send(self._verdict(judge, q, score, inference_ms, cells), parent=q.msg)
        held = [q.msg for q in batch if q.held]
        if held:
            self.release(*held)
        self._judged += len(batch)
        self.status.pop("inference_error", None)
        self.status.update(verdicts=self._judged, rejected=self._rejected)
        return True

    def _infer(self, judge: Judge, images: list[np.ndarray]) -> list[tuple[float, float, float, np.ndarray | None]]:
        """(score, normalisation ms, inference ms, defect map or None) per image, batched by size and
        by the model's fixed batch."""
        results: list[tuple[float, float, float, np.ndarray | None] | None] = [None] * len(images)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            by_shape.setdefault(image.shape, []).append(i)
        fixed = judge.model.info.fixed_batch
        step = fixed or self.params.batch.max_size
        for indices in by_shape.values():
            for start in range(0, len(indices), step):
                chunk = indices[start : start + step]
                began = time.perf_counter()
                tensor = judge.preprocessor.normalise([images[i] for i in chunk])
                normalise_ms = (time.perf_counter() - began) * 1000 / len(chunk)
                if fixed and len(chunk) < fixed:  # a frozen batch axis: pad with copies of the first
                    tensor = np.concatenate([tensor, np.repeat(tensor[:1], fixed - len(chunk), axis=0)])
                began = time.perf_counter()
                output, cells = judge.model.run_with_map(tensor)
                scores = defect_scores(output)
                elapsed = (time.perf_counter() - began) * 1000
                for k, (i, score) in enumerate(zip(chunk, scores)):
                    results[i] = (float(score), normalise_ms, elapsed, None if cells is None else cells[k])
        return results  # type: ignore[return-value]

    def _verdict(self, judge: Judge, q: _Queued, score: float, inference_ms: float,
                 cells: np.ndarray | None = None) -> Verdict:
        defective = score >= judge.threshold
        self._rejected += defective
        verdict: Verdict = {
            "part_id": q.msg.get("part_id"),
            "camera": q.msg.get("camera"),
            "defective": bool(defective),
            "label": judge.labels[1] if defective else judge.labels[0],
            "score": score,
            "threshold": judge.threshold,
            "model": judge.name,
            "model_version": judge.version,
            "backend": judge.model.backend,
            "preprocess_ms": round(q.preprocess_ms, 3),
            "inference_ms": round(inference_ms, 3),
        }
        region = self._map_region(judge, q.msg) if cells is not None else None
        if region is not None:
            verdict["defect_map"] = map_to_bytes(cells)
            verdict["defect_map_region"] = region
        if "truth" in q.msg.payload:
            verdict["truth"] = q.msg["truth"]
        return verdict

    @staticmethod
    def _map_region(judge: Judge, msg: Message) -> list[int] | None:
        """The frame pixels (x, y, width, height) the defect map covers: the crop, or the whole frame.

        None for a letterboxed input, whose map also covers the padding.
        """
        spec = judge.preprocessor.spec
        if spec.keep_aspect:
            return None
        if spec.roi is not None:
            return list(spec.roi)
        image = msg["image"]
        return [0, 0, int(image.shape[1]), int(image.shape[0])]

    # --- models and versions ----------------------------------------------------------------

    def _open_versions(self) -> ModelVersions | None:
        if not self.params.model_updates:
            return None
        instance = self.params.registry_instance(self.home_redis)
        try:
            client = self.redis(instance)
        except (GraphrunError, KeyError) as exc:
            if self.params.registry:
                raise
            self.log.warning("no model updates: the graph has no Redis instance %r (%s)", instance, exc)
            return None
        return ModelVersions(client, self.name)

    def _initial_judge(self) -> Judge:
        """The active deployed version if there is one, else the model file (registered as version one).

        The file is loaded and hashed once, for its version and to run it.
        """
        if self._versions is not None:
            active = self._versions.active()
            if active is not None:
                return self._build(self._versions.blob(active), active)
        source = self.params.model or DEFAULT_MODEL
        path = str(source)
        blob = read_model(source)
        info, loaded = backends.read(self._backend, blob, self.params, fallback_name=self._fallback_name(path))
        version = self.params.model_version or info.version
        if self._versions is not None and not self._versions.add(
            blob, version=version, name=self.params.model_name or info.name, sha256=info.sha256, only_if_empty=True
        ):
            active = self._versions.active()  # another replica registered first
            if active is not None:
                if loaded is not None:
                    loaded.close()
                return self._build(self._versions.blob(active), active)
        return self._build(blob, version, path, loaded=loaded, info=info)

    def _fallback_name(self, path: str) -> str:
        return self.params.model_name or path.rsplit("/", 1)[-1].removesuffix(".onnx")

    def _build(self, blob: bytes, version: str, path: str | None = None, *,
               loaded: backends.LoadedModel | None = None, info: ModelInfo | None = None) -> Judge:
        """A judge of ``version``: ``loaded`` is the model already loaded from ``blob``, if it
        was; ``info`` what was already read of it."""
        if loaded is None:
            ai_key = (
                self._versions.ai_key(version) if self._versions is not None else f"graphrun:model:{self.name}:ai:{version}"
            )
            loaded = backends.load(self._backend, blob, self.params, ai_client=self._ai, ai_key=ai_key, info=info,
                                   fallback_name=self._fallback_name(path or "model"))
        info = loaded.info
        spec = spec_for(info, self.params.preprocess, version)
        h_axis, w_axis = (2, 3) if spec.layout == "NCHW" else (1, 2)
        h, w = info.input_shape[h_axis], info.input_shape[w_axis]
        threshold = self.params.threshold if self.params.threshold is not None else info.threshold
        return Judge(
            model=loaded,
            version=version,
            name=self.params.model_name or info.name,
            preprocessor=Preprocessor(spec),
            threshold=0.5 if threshold is None else threshold,
            labels=info.labels,
            frame_hw=(h, w) if isinstance(h, int) and isinstance(w, int) else None,
        )

    def _version_check_due(self) -> bool:
        return self._versions is not None and time.monotonic() >= self._next_check

    def _follow_versions(self) -> None:
        """Switches to the active version if it changed; polled at most every check_interval_ms."""
        self._next_check = time.monotonic() + self.params.check_interval_ms / 1000
        try:
            active = self._versions.active()
            if active is None or active in (self._judge.version, self._unusable):
                return
            judge = self._build(self._versions.blob(active), active)
        except (ModelError, PreprocessConfigError, RedisAIError) as exc:
            self._unusable = active
            self.status["model_error"] = str(exc)
            self.log.error("staying on model v%s: version %s is unusable: %s", self._judge.version, active, exc)
            return
        except redis.RedisError as exc:
            self.log.warning("model version check failed, staying on v%s: %s", self._judge.version, exc)
            return
        previous, self._judge = self._judge, judge
        previous.model.close()
        self.status.pop("model_error", None)
        self.log.info("model switched: v%s -> v%s", previous.version, judge.version)
        self._announce()

    def _announce(self) -> None:
        judge = self._judge
        self.status.update(model=judge.name, model_version=judge.version, backend=judge.model.backend)
        self.log.info(
            "model %s v%s on %s, threshold %.4f", judge.name, judge.version, judge.model.backend, judge.threshold
        )
        if self._versions is not None:
            try:
                self._versions.report_running(self._instance, judge.version, judge.model.backend)
            except redis.RedisError as exc:
                self.log.warning("could not record the running model version: %s", exc)
