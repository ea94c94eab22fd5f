"""Extractor: a model -> its layer DAG (``dag.json``) and weights (``weights.npz``).

In: a Keras model (object, ``.keras``/``.h5`` file, SavedModel directory, ``keras:<Name>``) or a
``.tflite`` file (fp32 or full-integer int8). Out: a :class:`Dag`, one entry per operator in
execution order, in the seed's DAG format plus documented extensions (``docs/dag_format.md``).

- ``sources``: opens any of those forms safely and picks the reader;
- ``keras_reader`` / ``tflite_reader``: build the entries (``entry`` fills their fields);
- ``executor``: runs a DAG with numpy, the reference that proves an extraction right;
- ``summary``: the ``fcm inspect`` table and totals.
"""

from .dag import DAG_FILE, WEIGHTS_FILE, Dag, Layer
from .executor import run_dag
from .sources import SourceOptions, extract

__all__ = ["DAG_FILE", "WEIGHTS_FILE", "Dag", "Layer", "SourceOptions", "extract", "run_dag"]
