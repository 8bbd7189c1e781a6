targets {
  dns = "route53"
}
route53 {
  zone_id = "1G9G7X6IKZBQJHR85B1VP3"
  record_name = "{slug}.try.example.com"
  target = "ingress.example.com"
}
