// placeholder until the JS SDK lands
