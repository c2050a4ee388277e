package cluster

import "k8s.io/apimachinery/pkg/util/intstr"

func intstrFrom(p int32) intstr.IntOrString { return intstr.FromInt32(p) }
