"""Adapters: the ports on Azure ML, Table Storage, Event Grid, SQLite and local folders.

azure-core logs every request and response, headers included, at INFO through its HTTP logging policy. On the
Functions host INFO reaches Application Insights, so every Azure call would cost a log line or two: the policy
logs warnings only, unless something configured its logger on purpose (a level set explicitly is kept).
"""

import logging

HTTP_LOGGING_POLICY = "azure.core.pipeline.policies.http_logging_policy"

if logging.getLogger(HTTP_LOGGING_POLICY).level == logging.NOTSET:
    logging.getLogger(HTTP_LOGGING_POLICY).setLevel(logging.WARNING)
