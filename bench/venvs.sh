# The pinned Python venvs of the benchmarks, sourced by the bench scripts
# (the same pins as tests/common/python.rs): sets $tf (TensorFlow, in
# target/tf-venv) and $oracle (TFLM, in target/oracle-venv), each made on
# first use.
tf=target/tf-venv
if [ ! -x "$tf/bin/python" ] || ! "$tf/bin/python" -c 'import tensorflow' >/dev/null 2>&1; then
    python3 -m venv "$tf"
    "$tf/bin/pip" install --quiet tensorflow-cpu==2.21.0 numpy==2.4.6
fi
oracle=target/oracle-venv
if [ ! -x "$oracle/bin/python" ] || ! "$oracle/bin/python" -c 'import tflite_micro' >/dev/null 2>&1; then
    python3 -m venv "$oracle"
    "$oracle/bin/pip" install --quiet tflite-micro==0.dev20261023182759 numpy==2.4.6
fi
