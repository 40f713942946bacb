"""The Ray Serve application: config, app builder, gateway ingress, variant and log deployments."""
