"""A small line plot of the validation score against the training step (plain Qt painting)."""

from __future__ import annotations

from typing import List, Tuple

from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget


class ScorePlot(QWidget):
    """Points (step, score) joined by a line; the axes span the data (score 0..1 at most)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.points: List[Tuple[int, float]] = []
        self.setMinimumHeight(110)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.setToolTip("validation score (mean click and box IoU) against the step")

    def set_points(self, points) -> None:
        self.points = [(int(s), float(v)) for s, v in points]
        self.update()

    def add_point(self, step: int, score: float) -> None:
        self.points.append((int(step), float(score)))
        self.update()

    def ranges(self):
        """((step0, step1), (score0, score1)) shown on the axes."""
        steps = [p[0] for p in self.points] or [0, 1]
        vals = [p[1] for p in self.points] or [0.0, 1.0]
        lo, hi = min(vals), max(vals)
        pad = max(0.02, (hi - lo) * 0.15)
        return ((min(steps), max(max(steps), min(steps) + 1)),
                (max(0.0, lo - pad), min(1.0, hi + pad)))

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        w, h = self.width(), self.height()
        left, right, top, bottom = 40, 8, 8, 18
        pw, ph = max(w - left - right, 1), max(h - top - bottom, 1)
        fg = self.palette().color(self.foregroundRole())
        p.setPen(QPen(fg, 1))
        p.drawRect(left, top, pw, ph)
        (s0, s1), (v0, v1) = self.ranges()
        p.drawText(2, top + 10, f"{v1:.2f}")
        p.drawText(2, top + ph, f"{v0:.2f}")
        p.drawText(left, h - 3, f"step {s0}")
        p.drawText(left + pw - 60, h - 3, f"{s1}")
        if not self.points:
            p.drawText(left + 8, top + ph // 2, "validation score appears here")
            p.end()
            return

        def xy(s, v):
            return QPointF(left + (s - s0) / (s1 - s0) * pw,
                           top + ph - (v - v0) / max(v1 - v0, 1e-9) * ph)

        pts = [xy(s, v) for s, v in self.points]
        p.setPen(QPen(QColor(80, 170, 255), 2))
        for a, b in zip(pts, pts[1:]):
            p.drawLine(a, b)
        p.setBrush(QColor(80, 170, 255))
        for q in pts:
            p.drawEllipse(q, 2.5, 2.5)
        best = max(range(len(self.points)), key=lambda i: self.points[i][1])
        p.setPen(QPen(QColor(255, 200, 60), 2))
        p.setBrush(Qt.NoBrush)
        p.drawEllipse(pts[best], 5, 5)
        p.end()
