"""The Functions host's entry point: one app, one blueprint per trigger area. Logic lives in promotion/."""

import azure.functions as func

from promotion.triggers import api, drift, events, jobs, lifecycle, registry

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(events.bp)
app.register_functions(registry.bp)
app.register_functions(api.bp)
app.register_functions(jobs.bp)
app.register_functions(lifecycle.bp)
app.register_functions(drift.bp)
