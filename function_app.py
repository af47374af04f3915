"""The Functions host's entry point: one app, one blueprint per trigger area. Logic lives in promotion/.

Every HTTP route is anonymous at the Functions level: a person signed in through platform authentication uses the
console and the API with the browser session alone, never a function key in a URL. The API checks the identity
itself (401 without platform authentication) and refuses state changes from other sites (promotion.identity).
"""

import azure.functions as func

from promotion.triggers import api, console, drift, events, jobs, lifecycle, registry

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
app.register_functions(events.bp)
app.register_functions(registry.bp)
app.register_functions(api.bp)
app.register_functions(console.bp)
app.register_functions(jobs.bp)
app.register_functions(lifecycle.bp)
app.register_functions(drift.bp)
