"""A tiny MLflow pyfunc model: a linear taxi-fare estimate, so the sample needs no ML framework.

mlflow.pyfunc.load_model() calls _load_pyfunc with the path of coefficients.json.
"""

import json


class TaxiFareModel:
    def __init__(self, coefficients):
        self.c = coefficients

    def predict(self, model_input, params=None):
        rows = model_input.to_dict("records") if hasattr(model_input, "to_dict") else model_input
        return [
            self.c["intercept"]
            + self.c["per_km"] * row["distance"]
            + self.c["per_passenger"] * row["passengers"]
            + (self.c["night_surcharge"] if row["pickup_hour"] in self.c["night_hours"] else 0.0)
            for row in rows
        ]


def _load_pyfunc(data_path):
    with open(data_path, encoding="utf-8") as handle:
        return TaxiFareModel(json.load(handle))
