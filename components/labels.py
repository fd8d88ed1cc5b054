"""Kubernetes label keys shared by components and config validation (constants only: no Pulumi import)."""

# The NVIDIA device plugin picks its per-node config from this node label: `time-sliced-<N>` advertises every GPU of
# the node N times (see components/cluster_addons.py), so N model pods share one physical GPU.
DEVICE_PLUGIN_CONFIG_LABEL = "nvidia.com/device-plugin.config"
