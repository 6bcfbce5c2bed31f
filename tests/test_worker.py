"""pipelines worker: which queues a kind serves, and the root cause of a failed pull step.

A real worker and server run these paths in tests/test_deploy.py; these cover the cases that a
loopback setup cannot produce (a worker without S3 credentials).
"""

from pipelines.components.environment import Kind
from pipelines.worker import explain_retrieval_failure, queues_of, root_cause

RETRIEVAL_FAILED = (
    "Flow could not be retrieved from deployment. StepExecutionError: Encountered error while running "
    "prefect.deployments.steps.pull_from_remote_storage"
)
NO_CREDENTIALS = """Flow could not be retrieved from deployment.
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/prefect/deployments/steps/core.py", line 160, in run_steps
    step_output = await run_step(step, upstream_outputs)
  File "/venv/lib/python3.11/site-packages/botocore/signers.py", line 105, in sign
    raise NoCredentialsError()
botocore.exceptions.NoCredentialsError: Unable to locate credentials

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/prefect/engine.py", line 437, in retrieve_flow_then_begin_flow_run
    else await load_flow_from_flow_run(
  File "/venv/lib/python3.11/site-packages/prefect/deployments/steps/core.py", line 188, in run_steps
    raise StepExecutionError(f"Encountered error while running {fqn}") from exc
prefect.deployments.steps.core.StepExecutionError: Encountered error while running \
prefect.deployments.steps.pull_from_remote_storage
"""


def test_a_kind_serves_the_queues_of_its_namespaces():
    names = ["default", "serving", "e2e", "research-feature-x", "local", "research-b"]
    assert queues_of(Kind.RESEARCH, names) == ["default", "local", "research-b", "research-feature-x"]
    assert queues_of(Kind.SERVING, names) == ["serving"]
    assert queues_of(Kind.E2E, names) == ["e2e"]


def test_the_root_cause_is_the_first_exception_of_the_chain():
    assert root_cause(NO_CREDENTIALS) == (
        "botocore.exceptions.NoCredentialsError",
        "Unable to locate credentials",
    )
    assert root_cause("no traceback here") is None


def test_a_failed_pull_gets_its_root_cause_and_what_to_do():
    message = explain_retrieval_failure(RETRIEVAL_FAILED, ["Opening process...", NO_CREDENTIALS])
    assert message == (
        "Could not fetch the deployed code (pull step pull_from_remote_storage): "
        "botocore.exceptions.NoCredentialsError: Unable to locate credentials. The worker has no S3 credentials: "
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or an instance role) in the worker's environment, then "
        "run the deployment again."
    )
    # a run that failed inside its flow keeps Prefect's message
    assert (
        explain_retrieval_failure("Flow run encountered an exception. ValueError: x", [NO_CREDENTIALS])
        is None
    )
