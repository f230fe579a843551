package config

import fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"

// PoolUse is a pool with the backend settings that rules use it with, in configuration order.
type PoolUse struct {
	Pool     *fgv1.BackendAddressPool
	Settings []*fgv1.BackendHttpSettings
	// L4Settings are the layer-4 backend settings layer-4 rules use it with.
	L4Settings []*fgv1.BackendSettings
}

// PoolUses lists every pool with the settings its rules pair it with.
func PoolUses(gw *fgv1.Gateway) []PoolUse {
	settings := map[string]*fgv1.BackendHttpSettings{}
	for _, s := range gw.GetBackendHttpSettingsCollection() {
		settings[s.GetName()] = s
	}
	pairs := map[string][]string{}
	add := func(pool, set string) {
		for _, s := range pairs[pool] {
			if s == set {
				return
			}
		}
		pairs[pool] = append(pairs[pool], set)
	}
	maps := map[string]*fgv1.UrlPathMap{}
	for _, m := range gw.GetUrlPathMaps() {
		maps[m.GetName()] = m
	}
	for _, r := range gw.GetRequestRoutingRules() {
		if r.GetUrlPathMap() == "" {
			add(r.GetBackendAddressPool(), r.GetBackendHttpSettings())
			continue
		}
		m := maps[r.GetUrlPathMap()]
		add(m.GetDefaultBackendAddressPool(), m.GetDefaultBackendHttpSettings())
		for _, pr := range m.GetPathRules() {
			add(pr.GetBackendAddressPool(), pr.GetBackendHttpSettings())
		}
	}
	l4 := map[string]*fgv1.BackendSettings{}
	for _, s := range gw.GetBackendSettingsCollection() {
		l4[s.GetName()] = s
	}
	l4pairs := map[string][]string{}
	for _, r := range gw.GetRoutingRules() {
		pool, set := r.GetBackendAddressPool(), r.GetBackendSettings()
		dup := false
		for _, s := range l4pairs[pool] {
			dup = dup || s == set
		}
		if !dup {
			l4pairs[pool] = append(l4pairs[pool], set)
		}
	}
	var out []PoolUse
	for _, p := range gw.GetBackendAddressPools() {
		pu := PoolUse{Pool: p}
		for _, s := range pairs[p.GetName()] {
			if set := settings[s]; set != nil {
				pu.Settings = append(pu.Settings, set)
			}
		}
		for _, s := range l4pairs[p.GetName()] {
			if set := l4[s]; set != nil {
				pu.L4Settings = append(pu.L4Settings, set)
			}
		}
		out = append(out, pu)
	}
	return out
}
