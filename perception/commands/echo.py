"""`perception echo [--topic T] ENDPOINT`: print the node's messages readably (one block per message)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from perception.messaging.schemas import DetectionsMessage, Envelope


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from perception.messaging.services import SERVICES

    parser.add_argument("endpoint", metavar="ENDPOINT", help="publisher endpoint, e.g. tcp://127.0.0.1:7450")
    parser.add_argument("--topic", action="append", choices=list(SERVICES),
                        help="topic to print (repeatable; default: all)")
    parser.add_argument("--count", type=int, metavar="N", help="exit after N messages")
    parser.add_argument("--timeout", type=float, metavar="S",
                        help="fail (exit 1) if no message arrives for S seconds")
    parser.add_argument("--conflate", action="store_true", help="print only the latest message of each topic")
    parser.add_argument("--curve-secret", type=Path, metavar="FILE", help="this client's CURVE .key_secret file")
    parser.add_argument("--curve-server-key", type=Path, metavar="FILE", help="the publisher's CURVE .key file")


def run(args: argparse.Namespace) -> int:
    from perception.errors import ConfigError
    from perception.messaging.curve import CurveClientKeys
    from perception.messaging.subscriber import Subscriber

    if (args.curve_secret is None) != (args.curve_server_key is None):
        raise ConfigError("--curve-secret and --curve-server-key go together")
    curve = None if args.curve_secret is None else CurveClientKeys(args.curve_secret, args.curve_server_key)
    printed, interrupted = 0, False
    with Subscriber(args.endpoint, args.topic, conflate=args.conflate, curve=curve) as sub:
        try:
            while args.count is None or printed < args.count:
                envelope = sub.recv(args.timeout)
                if envelope is None:
                    print(f"perception echo: no message for {args.timeout} s", file=sys.stderr)
                    return 1
                print(format_envelope(envelope), flush=True)
                printed += 1
        except KeyboardInterrupt:
            interrupted = True
        bad = {topic: s.bad for topic, s in sub.stats.items() if s.bad}
    print(f"perception echo: {printed} messages" + (f", bad (skipped): {bad}" if bad else ""), file=sys.stderr)
    return 130 if interrupted else 0   # the exit-code policy (perception/cli.py)


def format_envelope(envelope: Envelope) -> str:
    from perception.messaging.schemas import DetectionsMessage, HintsMessage

    m = envelope.message
    d = m.diag
    lines = [f"{envelope.topic} seq={envelope.seq} publish_ns={envelope.publish_ns} model={d.model_id}"]
    stale = m.stale if isinstance(m, DetectionsMessage) else [False] * len(d.cameras)
    lines.append("  cameras: " + ", ".join(
        f"{name} (capture_ns {t}, dropped {n}{', STALE' if s else ''})"
        for name, t, n, s in zip(d.cameras, d.capture_ns, d.dropped_frames, stale)))
    if d.stage_ns:
        lines.append("  stages ms: " + " ".join(f"{k} {v / 1e6:.2f}" for k, v in d.stage_ns.items()))
    if isinstance(m, DetectionsMessage):
        lines += _format_detections(m)
    elif isinstance(m, HintsMessage):
        lead = "none" if m.lead is None else (
            f"id {m.lead.track_id} gap {m.lead.gap_m:.1f} m rel_speed {m.lead.rel_speed_mps:+.2f} m/s "
            f"ttc {m.lead.ttc_s:.1f} s")
        lines += [f"  frame_ns={m.frame_ns} brake={m.brake} confidence={m.confidence:.2f}",
                  f"  lead: {lead}",
                  f"  speed_cap {m.speed_cap_mps:.1f} m/s  free_distance {m.free_distance_m:.1f} m  "
                  f"cut_in_ids {m.cut_in_ids.tolist()}"]
    else:
        lines += [f"  state={m.state}" + (f" reasons: {'; '.join(m.reasons)}" if m.reasons else ""),
                  "  camera_states: " + ", ".join(f"{c} {s}" for c, s in zip(d.cameras, m.camera_states)),
                  f"  latency p50 {m.latency_p50_ms:.1f} ms p99 {m.latency_p99_ms:.1f} ms  rate {m.rate_hz:.1f} Hz  "
                  f"drop_ratio {m.drop_ratio:.3f}  bad_frames {m.bad_frames}  publish_drops {m.publish_drops}"]
    return "\n".join(lines)


def _format_detections(m: DetectionsMessage) -> list[str]:
    from perception.messaging.schemas import RangeSource

    o = m.objects
    row = "  {:>6}  {:<10}  {:<10}  {:>5}  {:<19}  {:>7}  {:<6}  {:<17}  {:<17}  {:>6}  {}"
    lines = [f"  frame_ns={m.frame_ns} objects={len(o)}"]
    if len(o):
        lines.append(row.format("id", "camera", "class", "score", "box x0,y0,x1,y1", "range m", "source",
                                "position x,y,z m", "velocity m/s", "ttc s", "age s"))
    for i in range(len(o)):
        lines.append(row.format(
            o.track_id[i], m.diag.cameras[o.camera[i]], m.classes[o.cls[i]], f"{o.score[i]:.2f}",
            ",".join(f"{v:.0f}" for v in o.box[i]), f"{o.range_m[i]:.1f}",
            RangeSource(o.range_source[i]).name.lower(), ",".join(f"{v:.1f}" for v in o.position[i]),
            ",".join(f"{v:+.1f}" for v in o.velocity[i]), f"{o.ttc_s[i]:.1f}",
            f"{o.age_s[i]:.1f}{' coasting' if o.coasting[i] else ''}"))
    return lines
