"""The field names each object part may have (Kubernetes v1.30, Gateway API v1.2, Istio 1.24).

Used to refuse misspelt fields, as `kubectl apply` does with its default strict validation.
Parts whose contents the mesh does not read (resources, probes, affinity, ...) are not listed
deeper than their own name.
"""

TOP = ("apiVersion", "kind", "metadata", "spec", "status")
TOP_EXTRA = {
    "ServiceAccount": ("secrets", "imagePullSecrets", "automountServiceAccountToken"),
    "ConfigMap": ("data", "binaryData", "immutable"),
    "Secret": ("data", "stringData", "type", "immutable"),
}
METADATA = ("name", "namespace", "labels", "annotations", "uid", "resourceVersion",
            "creationTimestamp", "generation", "generateName", "deletionTimestamp",
            "deletionGracePeriodSeconds", "finalizers", "ownerReferences", "managedFields",
            "selfLink")

POD_SPEC = ("activeDeadlineSeconds", "affinity", "automountServiceAccountToken", "containers",
            "dnsConfig", "dnsPolicy", "enableServiceLinks", "ephemeralContainers", "hostAliases",
            "hostIPC", "hostNetwork", "hostPID", "hostUsers", "hostname", "imagePullSecrets",
            "initContainers", "nodeName", "nodeSelector", "os", "overhead", "preemptionPolicy",
            "priority", "priorityClassName", "readinessGates", "resourceClaims", "restartPolicy",
            "runtimeClassName", "schedulerName", "schedulingGates", "securityContext",
            "serviceAccount", "serviceAccountName", "setHostnameAsFQDN", "shareProcessNamespace",
            "subdomain", "terminationGracePeriodSeconds", "tolerations",
            "topologySpreadConstraints", "volumes")
CONTAINER = ("args", "command", "env", "envFrom", "image", "imagePullPolicy", "lifecycle",
             "livenessProbe", "name", "ports", "readinessProbe", "resizePolicy", "resources",
             "restartPolicy", "securityContext", "startupProbe", "stdin", "stdinOnce",
             "terminationMessagePath", "terminationMessagePolicy", "tty", "volumeDevices",
             "volumeMounts", "workingDir")
CONTAINER_PORT = ("containerPort", "hostIP", "hostPort", "name", "protocol")
ENV_VAR = ("name", "value", "valueFrom")
POD_TEMPLATE = ("metadata", "spec")
DEPLOYMENT_SPEC = ("minReadySeconds", "paused", "progressDeadlineSeconds", "replicas",
                   "revisionHistoryLimit", "selector", "strategy", "template")
DAEMONSET_SPEC = ("minReadySeconds", "revisionHistoryLimit", "selector", "template",
                  "updateStrategy")
LABEL_SELECTOR_REQUIREMENT = ("key", "operator", "values")
SERVICE_SPEC = ("allocateLoadBalancerNodePorts", "clusterIP", "clusterIPs", "externalIPs",
                "externalName", "externalTrafficPolicy", "healthCheckNodePort",
                "internalTrafficPolicy", "ipFamilies", "ipFamilyPolicy", "loadBalancerClass",
                "loadBalancerIP", "loadBalancerSourceRanges", "ports", "publishNotReadyAddresses",
                "selector", "sessionAffinity", "sessionAffinityConfig", "trafficDistribution",
                "type")
SERVICE_PORT = ("appProtocol", "name", "nodePort", "port", "protocol", "targetPort")
NODE_SPEC = ("configSource", "externalID", "podCIDR", "podCIDRs", "providerID", "taints",
             "unschedulable")

GATEWAY_SPEC = ("gatewayClassName", "listeners", "addresses", "infrastructure", "backendTLS",
                "allowedListeners")
LISTENER = ("name", "hostname", "port", "protocol", "tls", "allowedRoutes")

# Istio security kinds: security.py holds their field table next to their parser.
