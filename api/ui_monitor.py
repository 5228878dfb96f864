"""The analyst UI's monitor page (admins): how the live model is doing over the last days, the same figures as
`fraud-service monitor` and the /metrics gauges (`fraud_service.scoring.monitor`). Part of the `ui` blueprint."""

from __future__ import annotations

import datetime as dt
import math

from flask import render_template
from flask.typing import ResponseReturnValue

from api.core import core
from api.ui import WINDOWS, admins_only, bp, signed_in, window_days
from fraud_service.scoring import monitor


@bp.get("/monitor")
@signed_in
def monitor_page() -> ResponseReturnValue:
    admins_only("The monitor is for admins.")
    days = window_days()
    end = dt.datetime.now(dt.UTC)
    report = monitor.live(core().uow(), core().settings, start=end - dt.timedelta(days=days), end=end)
    features = sorted(report["features"].items(), key=lambda kv: -(0 if math.isnan(kv[1]["psi"]) else kv[1]["psi"]))
    return render_template("ui/monitor.html", report=report, features=features, days=days, choices=WINDOWS,
                           isnan=math.isnan)
