"""``make deploy-kind``: a local Kubernetes cluster running Voxmesh from this checkout.

Needs Docker, ``kind`` and ``kubectl`` on the PATH (this script says what is missing). It
creates the cluster (``infra/kind/cluster.yaml``, Calico so NetworkPolicies are enforced),
builds every image from its Dockerfile, loads them into the nodes, and installs the chart with
the Helm SDK (no ``helm`` binary needed), using ``infra/kind/values-kind.yaml``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = "voxmesh"
CALICO = "https://raw.githubusercontent.com/projectcalico/calico/v3.28.2/manifests/calico.yaml"
NODEPORT = 30080


def step(message: str) -> None:
    """Shows progress."""
    print(f"• {message}", flush=True)


def run(*argv: str) -> str:
    """Runs a command; its stderr becomes the error message."""
    result = subprocess.run(argv, text=True, capture_output=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])} failed:\n{result.stderr.strip()[-2000:]}")
    return result.stdout


def images() -> dict[str, Path]:
    """Image tag -> Dockerfile, read from each Dockerfile's build comment."""
    found = {}
    for dockerfile in [*ROOT.glob("services/*/Dockerfile"), ROOT / "operator" / "Dockerfile"]:
        match = re.search(r"-t (ghcr\.io/voxmesh/\S+)", dockerfile.read_text())
        if match:
            found[match.group(1)] = dockerfile
    return found


def main() -> None:
    """Creates the cluster if needed, builds and loads the images, installs the chart."""
    missing = [tool for tool in ("docker", "kind", "kubectl") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(
            f"make deploy-kind needs {', '.join(missing)} on the PATH: Docker "
            "(https://docs.docker.com/get-docker/), kind (https://kind.sigs.k8s.io/docs/user/"
            "quick-start/#installation) and kubectl.")
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        raise SystemExit("Docker is installed but its daemon is not reachable (docker info).")
    if CLUSTER not in run("kind", "get", "clusters").split():
        step(f"creating kind cluster {CLUSTER!r} (3 nodes, Calico)")
        run("kind", "create", "cluster", "--config", str(ROOT / "infra/kind/cluster.yaml"))
        run("kubectl", "--context", f"kind-{CLUSTER}", "apply", "-f", CALICO)
    for tag, dockerfile in images().items():
        step(f"building {tag}")
        run("docker", "build", "-f", str(dockerfile), "-t", tag, str(ROOT))
        step(f"loading {tag} into the nodes")
        run("kind", "load", "docker-image", "--name", CLUSTER, tag)
    import helm_python as helm
    import yaml

    values = yaml.safe_load((ROOT / "infra/kind/values-kind.yaml").read_text())
    kubeconfig = run("kind", "get", "kubeconfig", "--name", CLUSTER)
    step("installing the chart (release voxmesh, namespace voxmesh)")
    with helm.Config(namespace="voxmesh", kubeconfig_content=kubeconfig) as config:
        chart = str(ROOT / "charts/voxmesh")
        if "voxmesh" in {item["name"] for item in config.list()}:
            config.upgrade(chart, "voxmesh", values, wait="watcher", timeout=900)
        else:
            config.install(chart, "voxmesh", values, create_namespace=True, wait="watcher",
                           timeout=900)
    port = run("kubectl", "--context", f"kind-{CLUSTER}", "-n", "voxmesh", "get", "svc",
               "voxmesh-edge", "-o", "jsonpath={.spec.ports[0].nodePort}").strip()
    if port != str(NODEPORT):
        run("kubectl", "--context", f"kind-{CLUSTER}", "-n", "voxmesh", "patch", "svc",
            "voxmesh-edge", "--type=json", "-p",
            f'[{{"op":"replace","path":"/spec/ports/0/nodePort","value":{NODEPORT}}}]')
    step(f"ready: open http://localhost:{NODEPORT} (kubectl --context kind-{CLUSTER} "
         "-n voxmesh get agentpools,pods)")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
